// `ukai storagenode`: the gRPC server plus its ZooKeeper registration and usage reports.
import os from 'node:os'
import path from 'node:path'
import { Logger } from '../log'
import { NodeAlive, validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { followRevocations } from './revocation-follow'
import type { ZkAuth } from '../meta/credentials'
import { StorageClient } from '../storagenode/client'
import { writeLocalReadToken } from '../storagenode/local-read-token'
import { StorageServerOptions, startStorageServer } from '../storagenode/server'
import { UkaiError, safetyCatch } from '../errors'
import { Lifecycle, closeWithin } from '../lib/lifecycle'
import type { NodeMetrics } from '../metrics/node-metrics'
import { STORAGE_NODE_PID_FILE, removePidFile, writePidFile } from '../lib/pid-file'

// How often a node refreshes the usage figures in its liveness znode.
const USAGE_REPORT_INTERVAL_MS = 5000
// A close of the server that takes longer (in-flight grace, gRPC shutdown, the store's fsync) is
// stuck: the server is destroyed (calls reset, no fsync: the next start syncs the data dir).
const SHUTDOWN_DRAIN_DEADLINE_MS = 30_000

export interface StorageNodeOptions {
  id: string
  site: string
  dataDir: string
  listen: string
  zk: string
  zkAuth: ZkAuth | null // null: --insecure-zk
  zkSessionTimeoutMs?: number
  zkConnectTimeoutMs?: number
  host?: string
  capacityBytes?: number
  scrub?: { bytesPerSecMax?: number, intervalMs?: number }  // storagenode/scrub.ts
  checksums?: boolean     // false: the hidden benchmark switch --bench-no-checksums (storagenode/version-files.ts)
  // Node id → HOST:PORT to reach that peer at instead of its registered address, for node-to-node
  // copies (`--peer-address`, e.g. a WAN proxy); the server's PullBlock uses it.
  peerAddresses?: Record<string, string>
  metrics?: NodeMetrics   // told of every request; reads the server's figures (--metrics-listen)
  tls?: StorageServerOptions['tls']  // absent: --insecure
  logger: Logger
}

// close(): the shutdown order (see below); destroy(err): the server destroyed at once, then the
// session closed.
export interface RunningStorageNode { address: string, close: () => Promise<void>, destroy: (err?: Error) => Promise<void> }

export async function runStorageNode (opts: StorageNodeOptions): Promise<RunningStorageNode> {
  validateId(opts.id, 'node id')
  validateId(opts.site, 'site')
  const log = opts.logger
  const meta = await MetaStore.connect(opts.zk, { auth: opts.zkAuth, logger: log, sessionTimeoutMs: opts.zkSessionTimeoutMs, connectTimeoutMs: opts.zkConnectTimeoutMs })
  const stopCrl = followRevocations(meta, opts.tls?.revoked, log)
  let server
  try {
    server = await startStorageServer({ nodeId: opts.id, dataDir: opts.dataDir, listen: opts.listen, capacityBytes: opts.capacityBytes, peerAddresses: opts.peerAddresses, rpc: opts.metrics, scrub: opts.scrub, checksums: opts.checksums, logger: log, tls: opts.tls, registeredPeer: registeredPeerOf(meta) })
  } catch (err) {
    stopCrl()
    await meta.close()
    throw err
  }
  // New at every start: an agent holding the old one re-checks, and drops what it cached.
  const dataDir = path.resolve(opts.dataDir)
  let localReadToken: string
  try {
    localReadToken = writeLocalReadToken(dataDir)
    writePidFile(path.join(dataDir, STORAGE_NODE_PID_FILE))
  } catch (err) {
    stopCrl()
    await server.close(0)
    await meta.close()
    throw err
  }
  const self = new StorageClient({ nodeId: opts.id, address: server.address })
  const startedAtMs = Date.now()
  let usage = await self.stat()
  const running = server
  opts.metrics?.bind({ zk: meta, stats: () => running.stats(), usage: () => usage })
  const alive = (): NodeAlive => ({ v: 1, address: server.address, startedAtMs, capacityBytes: usage.capacityBytes, usedBytes: usage.usedBytes, freeBytes: usage.freeBytes, dataDir, localReadToken })
  await meta.registerNode({ v: 1, id: opts.id, site: opts.site, host: opts.host ?? os.hostname(), address: server.address, registeredAtMs: Date.now() }, alive)
  const timer = setInterval(() => {
    self.stat().then(async (u) => {
      usage = u
      await meta.updateNodeAlive(opts.id, alive())
    }).catch(err => log.warn({ err: String(err) }, 'usage report failed'))
  }, USAGE_REPORT_INTERVAL_MS)
  timer.unref()

  // 1. stop accepting (no more usage reports; the server refuses new calls as its close starts),
  // 2. drain with a deadline (the server's grace for calls in flight, then its store's fsync),
  // 3. destroy what did not drain, 4. gRPC closed (the server's shutdown, our own client), 5. the
  // ZooKeeper session last: our liveness goes only after I/O stopped.
  const stopAccepting = (): void => { clearInterval(timer); stopCrl() }
  const life = new Lifecycle({
    drain: async () => {
      stopAccepting()
      await closeWithin(server, SHUTDOWN_DRAIN_DEADLINE_MS, () => UkaiError.unavailable(`storage node ${opts.id}: shutdown drain took over ${SHUTDOWN_DRAIN_DEADLINE_MS} ms`))
        .then(how => { if (how === 'destroyed') log.warn({ deadlineMs: SHUTDOWN_DRAIN_DEADLINE_MS }, 'storage server did not drain in time; destroyed') })
    },
    abort: async (err) => {
      stopAccepting()
      await server.destroy(err).catch(safetyCatch)
    },
    release: async () => {
      await self.close()
      await meta.close()
      removePidFile(path.join(dataDir, STORAGE_NODE_PID_FILE))
    }
  })
  return { address: server.address, close: async () => { await life.close() }, destroy: async (err?: Error) => { await life.destroy(err) } }
}

// A peer's registered addresses, from ZooKeeper (its record and its liveness record): PullBlock
// and CopyBase connect nowhere else (issue 12). Looked up per copy of a block: a list of the
// node znodes, cached for PEER_CACHE_MS (a copy naming an address not in the cache looks again).
const PEER_CACHE_MS = 10_000
function registeredPeerOf (meta: MetaStore): (id: string, fresh: boolean) => Promise<string[] | null> {
  const cache = new Map<string, { atMs: number, addresses: string[] | null }>()
  return async (id, fresh) => {
    const hit = cache.get(id)
    if (!fresh && hit !== undefined && Date.now() - hit.atMs < PEER_CACHE_MS) return hit.addresses
    const node = (await meta.listNodes()).find(n => n.id === id)
    const addresses = node === undefined ? null : [node.address, ...(node.alive === null ? [] : [node.alive.address])]
    cache.set(id, { atMs: Date.now(), addresses })
    return addresses
  }
}
