// `ukai mount`: the hypervisor agent — a FUSE mount of every disk of the cluster, plus the
// relocation runner that moves a disk's data while this host holds its lease.
import { Logger } from '../log'
import { validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { RelocationRunner } from '../relocate/runner'
import { Agent } from '../vdisk/agent'
import { mountAgent, unmountFuse } from '../vdisk/fuse-adapter'

export interface MountOptions {
  mountPoint: string
  host: string
  site: string
  zk: string
  zkSessionTimeoutMs?: number
  allowOther?: boolean
  handoverTimeoutMs?: number
  ioRetryMs?: number
  logger: Logger
}

export interface RunningMount { agent: Agent, stop: () => Promise<void> }

export async function runMount (opts: MountOptions): Promise<RunningMount> {
  validateId(opts.host, 'host name')
  validateId(opts.site, 'site')
  const meta = await MetaStore.connect(opts.zk, { logger: opts.logger, sessionTimeoutMs: opts.zkSessionTimeoutMs })
  let runner: RelocationRunner | null = null
  const agent = new Agent({
    meta, host: opts.host, site: opts.site, mountPoint: opts.mountPoint, handoverTimeoutMs: opts.handoverTimeoutMs, ioRetryMs: opts.ioRetryMs, logger: opts.logger,
    hooks: {
      attached: d => runner?.watch(d),
      detached: name => runner?.unwatch(name),
      leaseAcquired: d => { runner?.maybeStart(d) },
      leaseLost: name => runner?.stop(name)
    }
  })
  runner = new RelocationRunner({ meta, pool: agent.pool, host: opts.host, logger: opts.logger })
  let fuse
  try {
    await agent.start()
    fuse = await mountAgent(agent, opts.mountPoint, opts.logger, { allowOther: opts.allowOther })
  } catch (err) {
    await agent.close()
    meta.close()
    throw err
  }
  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    if (stopping !== null) return stopping
    stopping = (async () => {
      // Stop accepting (unmount; lazily if a process still has a file open), then drain the
      // disks (flush, release leases), then leave ZooKeeper last.
      await unmountFuse(fuse).catch(err => opts.logger.error({ err: String(err) }, 'unmount failed'))
      await runner?.close()
      await agent.close()
      meta.close()
    })()
    return stopping
  }
  return { agent, stop }
}
