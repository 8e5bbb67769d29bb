// `ukai storagenode`: the gRPC server plus its ZooKeeper registration and usage reports.
import os from 'node:os'
import path from 'node:path'
import { Logger } from '../log'
import { NodeAlive, validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import { writeLocalReadToken } from '../storagenode/local-read-token'
import { startStorageServer } from '../storagenode/server'
import type { NodeMetrics } from '../metrics/node-metrics'

// How often a node refreshes the usage figures in its liveness znode.
const USAGE_REPORT_INTERVAL_MS = 5000

export interface StorageNodeOptions {
  id: string
  site: string
  dataDir: string
  listen: string
  zk: string
  zkSessionTimeoutMs?: number
  zkConnectTimeoutMs?: number
  host?: string
  capacityBytes?: number
  // Node id → HOST:PORT to reach that peer at instead of its registered address, for node-to-node
  // copies (`--peer-address`, e.g. a WAN proxy); the server's PullBlock uses it.
  peerAddresses?: Record<string, string>
  metrics?: NodeMetrics   // told of every request; reads the server's figures (--metrics-listen)
  logger: Logger
}

export interface RunningStorageNode { address: string, stop: () => Promise<void> }

export async function runStorageNode (opts: StorageNodeOptions): Promise<RunningStorageNode> {
  validateId(opts.id, 'node id')
  validateId(opts.site, 'site')
  const log = opts.logger
  const meta = await MetaStore.connect(opts.zk, { logger: log, sessionTimeoutMs: opts.zkSessionTimeoutMs, connectTimeoutMs: opts.zkConnectTimeoutMs })
  let server
  try {
    server = await startStorageServer({ nodeId: opts.id, dataDir: opts.dataDir, listen: opts.listen, capacityBytes: opts.capacityBytes, peerAddresses: opts.peerAddresses, rpc: opts.metrics, logger: log })
  } catch (err) {
    meta.close()
    throw err
  }
  // New at every start: an agent holding the old one re-checks, and drops what it cached.
  const dataDir = path.resolve(opts.dataDir)
  let localReadToken: string
  try {
    localReadToken = writeLocalReadToken(dataDir)
  } catch (err) {
    await server.close(0)
    meta.close()
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

  let stopping: Promise<void> | null = null
  const stop = (): Promise<void> => {
    if (stopping !== null) return stopping
    stopping = (async () => {
      clearInterval(timer)
      self.close()
      await server.close()
      meta.close() // last: closing the session drops our liveness only after I/O stopped
    })()
    return stopping
  }
  return { address: server.address, stop }
}
