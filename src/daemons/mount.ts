// `ukai mount`: the hypervisor agent — a FUSE mount of every disk of the cluster, plus the
// relocation runner that moves a disk's data while this host holds its lease.
import { Logger } from '../log'
import { validateId } from '../meta/schema'
import { readLease } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { AutoRepair } from '../relocate/auto-repair'
import { RelocationRunner } from '../relocate/runner'
import { runOrphanedRelocation } from '../relocate/run-here'
import { Agent } from '../agent/agent'
import { CommittedCache } from '../vdisk/committed-cache'
import { checkMountOptions, mountAgent, unmountFuse } from '../agent/fuse-adapter'
import { RttMonitor } from '../agent/rtt-monitor'

export interface MountOptions {
  mountPoint: string
  host: string
  site: string
  zk: string
  zkSessionTimeoutMs?: number
  zkConnectTimeoutMs?: number
  allowOther?: boolean
  handoverTimeoutMs?: number
  ioRetryMs?: number
  nodeAddresses?: Record<string, string> // node id → HOST:PORT from this host (--node-address)
  rttIntervalMs?: number
  cacheDir?: string        // cache of committed blocks (snapshot and clone-parent reads)
  cacheSizeBytes?: number
  localReads?: boolean     // short-circuit reads from storage nodes on this host (default on)
  localReadFiles?: number  // their block files kept open at most
  autoRepair?: boolean     // replace a full node's stale replicas without an operator (default on)
  replicaHungMs?: number   // hung-replica bound (default REPLICA_HUNG_MS_DEFAULT)
  logger: Logger
}

export const CACHE_SIZE_DEFAULT_BYTES = 1024 ** 3

export interface RunningMount { agent: Agent, stop: () => Promise<void> }

export async function runMount (opts: MountOptions): Promise<RunningMount> {
  validateId(opts.host, 'host name')
  validateId(opts.site, 'site')
  checkMountOptions({ allowOther: opts.allowOther })
  const cache = opts.cacheDir !== undefined ? await CommittedCache.open({ dir: opts.cacheDir, maxBytes: opts.cacheSizeBytes ?? CACHE_SIZE_DEFAULT_BYTES, logger: opts.logger }) : undefined
  const meta = await MetaStore.connect(opts.zk, { logger: opts.logger, sessionTimeoutMs: opts.zkSessionTimeoutMs, connectTimeoutMs: opts.zkConnectTimeoutMs })
  let runner: RelocationRunner | null = null
  const autoRepair = opts.autoRepair === false ? null : new AutoRepair({ meta, logger: opts.logger })
  const agent = new Agent({
    meta, host: opts.host, site: opts.site, mountPoint: opts.mountPoint, handoverTimeoutMs: opts.handoverTimeoutMs, ioRetryMs: opts.ioRetryMs, nodeAddresses: opts.nodeAddresses, localReads: opts.localReads, localReadFiles: opts.localReadFiles, replicaHungMs: opts.replicaHungMs, logger: opts.logger,
    hooks: {
      attached: d => runner?.watch(d),
      detached: name => runner?.unwatch(name),
      leaseAcquired: d => { runner?.maybeStart(d) },
      leaseLost: name => runner?.stop(name),
      replicaStale: (d, node, code) => autoRepair?.replicaStale(d, node, code)
    }
  })
  agent.pool.committedCache = cache
  runner = new RelocationRunner({ meta, pool: agent.pool, host: opts.host, logger: opts.logger })
  const rtt = new RttMonitor({ meta, pool: agent.pool, host: opts.host, site: opts.site, intervalMs: opts.rttIntervalMs, ioSnapshot: () => agent.ioSnapshot(), logger: opts.logger })
  let fuse
  try {
    await agent.start()
    await rtt.start()
    fuse = await mountAgent(agent, opts.mountPoint, opts.logger, { allowOther: opts.allowOther })
  } catch (err) {
    await rtt.close()
    await agent.close()
    meta.close()
    throw err
  }
  resumeOrphanedRelocations(meta, agent, runner as RelocationRunner, opts).catch(err => opts.logger.error({ err: String(err) }, 'could not resume relocations'))
  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    if (stopping !== null) return stopping
    stopping = (async () => {
      // Stop accepting (unmount; lazily if a process still has a file open), then drain the
      // disks (flush, release leases), then leave ZooKeeper last.
      await unmountFuse(fuse).catch(err => opts.logger.error({ err: String(err) }, 'unmount failed'))
      autoRepair?.close()
      await runner?.close()
      await rtt.close()
      await agent.close()
      meta.close()
    })()
    return stopping
  }
  return { agent, stop }
}

// Relocations whose executor died (its lease is gone, or was held by this host before a crash)
// are picked up here, so a relocation survives the crash of whoever ran it. With nobody holding
// the lease, it runs without the lease and without opening the disk (relocate/run-here.ts); a
// lease left by this host's previous incarnation is taken over at once (the disk is adopted).
async function resumeOrphanedRelocations (meta: MetaStore, agent: Agent, runner: RelocationRunner, opts: MountOptions): Promise<void> {
  for (const name of await meta.listDiskNames()) {
    const rec = await meta.getRelocation(name)
    if (rec === null || rec.state === 'done' || rec.state === 'paused' || (rec.state === 'cancelled' && rec.finishedAtMs !== 0)) continue
    const lease = await readLease(meta, name)
    if (lease.holder !== null && lease.holder.host !== opts.host) continue
    opts.logger.info({ disk: name, state: rec.state }, 'resuming an orphaned relocation')
    if (lease.holder === null) {
      runOrphanedRelocation({ meta, pool: agent.pool, runner, host: opts.host, logger: opts.logger }, name)
        .catch(err => opts.logger.error({ disk: name, err: String(err) }, 'resumed relocation failed'))
      continue
    }
    agent.adopt(name, async (disk) => await (runner.maybeStart(disk) ?? Promise.resolve()))
      .catch(err => opts.logger.error({ disk: name, err: String(err) }, 'resumed relocation failed'))
  }
}
