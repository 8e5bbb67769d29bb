// `ukai mount`: the hypervisor agent — a FUSE mount of every disk of the cluster, plus the
// relocation runner that moves a disk's data while this host holds its lease, and (unless
// --no-controller) a controller candidate (src/controller).
import { Logger } from '../log'
import { validateId } from '../meta/schema'
import { readLease } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { followRevocations } from './revocation-follow'
import type { ZkAuth } from '../meta/credentials'
import { AutoRepair } from '../relocate/auto-repair'
import { Controller } from '../controller/controller'
import { defaultDuties } from '../controller/duties'
import { RelocationRunner } from '../relocate/runner'
import { runOrphanedRelocation } from '../relocate/run-here'
import { Agent } from '../agent/agent'
import { CommittedCache } from '../vdisk/committed-cache'
import { checkMountOptions, mountAgent, unmountFuse } from '../agent/fuse-adapter'
import { RttMonitor } from '../agent/rtt-monitor'
import { AgentExports } from '../nbd/agent-exports'
import { NbdServer } from '../nbd/server'
import { IO_RETRY_MS_DEFAULT } from '../vdisk/virtual-disk'
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Lifecycle, closeWithin } from '../lib/lifecycle'
import type { AgentMetrics } from '../metrics/agent-metrics'
import { TenantApiServer } from '../tenantapi/server'
import type { CertificateFiles } from '../storagenode/tls'
import type { RevocationList } from '../storagenode/revocation'

export interface MountOptions {
  mountPoint: string
  host: string
  site: string
  zk: string
  zkAuth: ZkAuth | null // null: --insecure-zk
  zkSessionTimeoutMs?: number
  zkConnectTimeoutMs?: number
  allowOther?: boolean
  handoverTimeoutMs?: number
  ioRetryMs?: number
  flushBehindMs?: number   // background flush of written blocks after this (0: off)
  nodeAddresses?: Record<string, string> // node id → HOST:PORT from this host (--node-address)
  rttIntervalMs?: number
  cacheDir?: string        // cache of committed blocks (snapshot and clone-parent reads)
  cacheSizeBytes?: number
  localReads?: boolean     // short-circuit reads from storage nodes on this host (default on)
  localReadFiles?: number  // their block files kept open at most
  heapGrowingPercent?: number // the V8 heap's growth after a mark-compact (lib/gc-ballast.ts; 0: V8's own)
  benchNoChecksums?: boolean  // the hidden benchmark switch --bench-no-checksums (vdisk/short-circuit-reads.ts)
  autoRepair?: boolean     // replace a full node's stale replicas without an operator (default on)
  controller?: boolean     // stand for the controller election (default on; --no-controller)
  replicaHungMs?: number   // hung-replica bound (default REPLICA_HUNG_MS_DEFAULT)
  nbdDir?: string          // an NBD Unix socket per disk in this directory (--nbd-dir)
  nbdListen?: { host: string, port: number } // and/or an NBD TCP listener (--nbd-listen)
  // The tenant API (src/tenantapi), served on this address with this agent's certificate
  // (--api-listen; tls null under --insecure: every call refused). Absent: not served.
  api?: { listen: string, tls: { files: CertificateFiles, revoked: RevocationList } | null }
  metrics?: AgentMetrics   // counts this mount's I/O and lease changes (--metrics-listen)
  logger: Logger
}

export const CACHE_SIZE_DEFAULT_BYTES = 1024 ** 3
// The agent's drain (every open disk flushed, its lease given up) may take this long, or twice the
// I/O retry bound if that is longer (one flush waits at most that for a replica to come back);
// past it the disks still draining are destroyed (no flush: as after a crash, fencing holds).
const SHUTDOWN_DRAIN_DEADLINE_MS_MIN = 60_000

// close(): the shutdown order (see below); destroy(err): unmount, then the agent destroyed (no
// flush), then the session closed.
export interface RunningMount { agent: Agent, nbd: NbdServer | null, api: TenantApiServer | null, close: () => Promise<void>, destroy: (err?: Error) => Promise<void> }

export async function runMount (opts: MountOptions): Promise<RunningMount> {
  validateId(opts.host, 'host name')
  validateId(opts.site, 'site')
  checkMountOptions({ allowOther: opts.allowOther })
  const cache = opts.cacheDir !== undefined ? await CommittedCache.open({ dir: opts.cacheDir, maxBytes: opts.cacheSizeBytes ?? CACHE_SIZE_DEFAULT_BYTES, logger: opts.logger }) : undefined
  const meta = await MetaStore.connect(opts.zk, { auth: opts.zkAuth, logger: opts.logger, sessionTimeoutMs: opts.zkSessionTimeoutMs, connectTimeoutMs: opts.zkConnectTimeoutMs })
  const stopCrl = followRevocations(meta, opts.api?.tls?.revoked, opts.logger)
  let runner: RelocationRunner | null = null
  let nbd: NbdServer | null = null
  let api: TenantApiServer | null = null
  const autoRepair = opts.autoRepair === false ? null : new AutoRepair({ meta, logger: opts.logger })
  const metrics = opts.metrics
  const agent = new Agent({
    meta, host: opts.host, site: opts.site, mountPoint: opts.mountPoint, handoverTimeoutMs: opts.handoverTimeoutMs, ioRetryMs: opts.ioRetryMs, flushBehindMs: opts.flushBehindMs, nodeAddresses: opts.nodeAddresses, localReads: opts.localReads, localReadFiles: opts.localReadFiles, benchNoChecksums: opts.benchNoChecksums, replicaHungMs: opts.replicaHungMs, logger: opts.logger,
    hooks: {
      attached: d => runner?.watch(d),
      detached: name => runner?.unwatch(name),
      leaseAcquired: d => { runner?.maybeStart(d); metrics?.leaseAcquired(d.name) },
      leaseLost: name => { runner?.stop(name); metrics?.leaseLost(name) },
      handoverRequested: name => metrics?.leaseHandedOver(name),
      replicaStale: (d, node, code) => { autoRepair?.replicaStale(d, node, code); metrics?.replicaStale(d.name) },
      disksChanged: () => nbd?.disksChanged()
    }
  })
  agent.pool.committedCache = cache
  runner = new RelocationRunner({ meta, pool: agent.pool, host: opts.host, logger: opts.logger })
  const relocations = runner
  metrics?.bind({
    zk: meta,
    disks: () => agent.listDisks(),
    ioTotals: () => agent.ioSnapshot(),
    relocating: name => relocations.isRunning(name),
    relocation: async (name) => {
      const rec = await meta.getRelocation(name)
      return rec === null ? null : { progressBytes: rec.progress.bytes, plannedBytes: rec.plan.bytes, createdAtMs: rec.createdAtMs, updatedAtMs: rec.progress.updatedAtMs, paceBytesPerSec: rec.pace?.bytesPerSec ?? 0 }
    }
  })
  const rtt = new RttMonitor({ meta, pool: agent.pool, host: opts.host, site: opts.site, intervalMs: opts.rttIntervalMs, ioSnapshot: () => agent.ioSnapshot(), logger: opts.logger })
  let fuse
  try {
    await agent.ready()
    await rtt.ready()
    fuse = await mountAgent(agent, opts.mountPoint, opts.logger, { allowOther: opts.allowOther, io: metrics, heapGrowingPercent: opts.heapGrowingPercent })
    if (opts.nbdDir !== undefined || opts.nbdListen !== undefined) {
      const server = new NbdServer({
        exports: new AgentExports(agent, metrics),
        socketDir: opts.nbdDir,
        listen: opts.nbdListen,
        owner: async (disk) => { try { return agent.fileOwner(await agent.stat(disk)) } catch (err) { if (isUkaiError(err, 'NOT_FOUND')) return null; throw err } },
        logger: opts.logger
      })
      nbd = server
      await server.start()
    }
    if (opts.api !== undefined) {
      api = new TenantApiServer({ listen: opts.api.listen, tls: opts.api.tls, meta, host: `tenant-api-${opts.host}`, site: opts.site, logger: opts.logger.child({ part: 'tenant-api' }) })
      await api.start()
    }
  } catch (err) {
    await api?.close()
    await nbd?.close()
    if (fuse !== undefined) await unmountFuse(fuse).catch(safetyCatch)
    await rtt.close()
    await agent.close()
    stopCrl()
    await meta.close()
    await cache?.close()
    throw err
  }
  // A controller candidate sharing the agent's pool and runner (controller/duty.ts says why).
  const controller = opts.controller === false ? null : new Controller({ meta, host: opts.host, site: opts.site, kind: 'agent', duties: defaultDuties(), pool: agent.pool, runner: runner as RelocationRunner, logger: opts.logger })
  controller?.ready().catch(err => opts.logger.error({ err: String(err) }, 'could not join the controller election'))
  resumeOrphanedRelocations(meta, agent, runner as RelocationRunner, opts).catch(err => opts.logger.error({ err: String(err) }, 'could not resume relocations'))
  // 1. stop accepting: NBD connections end (their requests run to the end), unmount (lazily if
  // a process still has a file open), no repairs, relocations or round-trip probes start;
  // 2. drain the disks (flush, leases given up) with a deadline; 3. destroy the disks that did
  // not drain; 4. gRPC closed (the agent's node clients); 5. the ZooKeeper session last, so
  // leases and the agent's record vanish only after I/O stopped.
  const drainDeadlineMs = Math.max(SHUTDOWN_DRAIN_DEADLINE_MS_MIN, 2 * (opts.ioRetryMs ?? IO_RETRY_MS_DEFAULT))
  let stoppedAccepting: Promise<void> | null = null
  const stopAccepting = (): Promise<void> => {
    stoppedAccepting ??= (async () => {
      agent.liftQos() // what the connections took finishes now, not at the disks' caps
      await api?.close()
      stopCrl()
      await nbd?.close()
      await unmountFuse(fuse).catch(err => opts.logger.error({ err: String(err) }, 'unmount failed'))
      await autoRepair?.close()
      await controller?.close()
      await runner?.close()
      await rtt.close()
    })()
    return stoppedAccepting
  }
  const life = new Lifecycle({
    drain: async () => {
      await stopAccepting()
      const how = await closeWithin(agent, drainDeadlineMs, () => UkaiError.unavailable(`mount ${opts.mountPoint}: the disks did not drain within ${drainDeadlineMs} ms`))
      if (how === 'destroyed') opts.logger.warn({ deadlineMs: drainDeadlineMs }, 'disks did not drain in time; destroyed')
    },
    abort: async (err) => {
      await stopAccepting()
      await agent.destroy(err).catch(safetyCatch)
    },
    release: async () => {
      await meta.close()
      await cache?.close()
    }
  })
  return { agent, nbd, api, close: async () => { await life.close() }, destroy: async (err?: Error) => { await life.destroy(err) } }
}

// Relocations whose executor died (its lease is gone, or was held by this host before a crash)
// are picked up here, so a relocation survives the crash of whoever ran it. With nobody holding
// the lease, it runs without the lease and without opening the disk (relocate/run-here.ts) —
// by the controller's orphan duty unless this agent stands with --no-controller; a
// lease left by this host's previous incarnation is taken over at once (the disk is adopted).
async function resumeOrphanedRelocations (meta: MetaStore, agent: Agent, runner: RelocationRunner, opts: MountOptions): Promise<void> {
  for (const name of await meta.listDiskNames()) {
    const rec = await meta.getRelocation(name)
    if (rec === null || rec.state === 'done' || rec.state === 'paused' || (rec.state === 'cancelled' && rec.finishedAtMs !== 0)) continue
    const lease = await readLease(meta, name)
    if (lease.holder !== null && lease.holder.host !== opts.host) continue
    // With a controller candidate here, the elected controller runs it (perhaps this agent's):
    // two lease-free runs would only supersede each other's fencing epochs.
    if (lease.holder === null && opts.controller !== false) continue
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
