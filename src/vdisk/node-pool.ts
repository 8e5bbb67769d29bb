// One StorageClient per storage node, kept current from ZooKeeper (node records and liveness),
// and how near each node is from this host — the rule (same host, then the lowest measured round
// trip, see rtt-monitor.ts; a node not measured yet ranks as same site first, then the rest) is
// meta/placement-policy.ts's; the pool brings the round trips and hung nodes.
// An address override (`ukai mount --node-address ID=HOST:PORT`) replaces the address a node
// registered, for this host only: how a WAN proxy is put between this host and a node.
import { safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { MetaStore, NodeView } from '../meta/store'
import { Vantage, nodeDistance } from '../meta/placement-policy'
import { NodeProgress, StorageClient } from '../storagenode/client'
import { UkaiError } from '../errors'
import type { CommittedCache } from './committed-cache'

export class NodePool {
  private readonly meta: MetaStore
  readonly host: string
  readonly site: string
  private readonly log: Logger
  private nodes = new Map<string, NodeView>()
  private readonly clients = new Map<string, StorageClient>()
  // Per node, shared by its clients: a node found hung by one is hung for all (client.ts).
  private readonly progress = new Map<string, NodeProgress>()
  private readonly replicaHungMs: number | undefined
  private closed = false
  private refreshing: Promise<void> | null = null
  private readonly addressOverrides: Record<string, string>
  private rttMs = new Map<string, number>()
  // What nodeDistance needs to know of this host.
  private readonly vantage: Vantage
  private readonly nodesChanged: Array<() => void> = []
  // This host's cache of committed block versions (`ukai mount --cache-dir`), used by every
  // reader of committed epochs that reads through this pool; absent: no cache.
  committedCache?: CommittedCache

  constructor (meta: MetaStore, opts: { host: string, site: string, logger?: Logger, addressOverrides?: Record<string, string>, replicaHungMs?: number }) {
    this.replicaHungMs = opts.replicaHungMs
    this.meta = meta
    this.host = opts.host
    this.site = opts.site
    this.vantage = { host: opts.host, site: opts.site, rttMs: id => this.rttMs.get(id), isHung: id => this.isHung(id) }
    this.log = opts.logger ?? silentLogger
    this.addressOverrides = { ...opts.addressOverrides }
  }

  // The address this host uses for a node: the override, else where it serves now, else where it registered.
  addressOf (n: NodeView): string {
    return this.addressOverrides[n.id] ?? n.alive?.address ?? n.address
  }

  // Smoothed round trips in ms from this host (the RTT monitor keeps them current).
  setRtts (rttMs: Map<string, number>): void { this.rttMs = new Map(rttMs) }
  rtt (id: string): number | undefined { return this.rttMs.get(id) }

  // ready(): the node list read once (and watched); close(): every client closed.
  private readonly life = new Lifecycle({
    open: async () => { await this.refresh() },
    release: async () => {
      this.closed = true
      const clients = [...this.clients.values()]
      this.clients.clear()
      await Promise.all(clients.map(async c => { await c.close() }))
    }
  })

  ready (): Promise<void> { return this.life.ready() }
  // The same as ready() (the name callers used before the one lifecycle shape).
  start (): Promise<void> { return this.life.ready() }

  // The watch of the node list, every node's liveness and usage: one function, so ZooKeeper's
  // client keeps it once per znode. A fresh closure per refresh piled up on the znodes that did
  // not change (the node list) each time a node's usage report fired the watch — every few
  // seconds — until MaxListenersExceededWarning in every agent, and in a CLI running a long
  // relocation.
  private readonly onListChanged = (): void => { if (!this.closed) this.refresh().catch(safetyCatch) }

  // Re-reads the node list; the watch calls it again on the next change.
  refresh (): Promise<void> {
    if (this.refreshing !== null) return this.refreshing
    this.refreshing = (async () => {
      try {
        const list = await this.meta.listNodes(this.onListChanged)
        const next = new Map(list.map(n => [n.id, n]))
        for (const [key, client] of this.clients) {
          const id = key.split('#')[0]
          const n = next.get(id)
          const old = this.nodes.get(id)
          if (n === undefined || old === undefined || this.addressOf(n) !== this.addressOf(old)) {
            client.close().catch(safetyCatch)
            this.clients.delete(key)
          }
        }
        this.nodes = next
        for (const fn of this.nodesChanged) fn()
      } finally {
        this.refreshing = null
      }
    })()
    return this.refreshing
  }

  // Called after every refresh of the node list (records and liveness).
  onNodesChanged (fn: () => void): void { this.nodesChanged.push(fn) }

  get (id: string): NodeView | undefined { return this.nodes.get(id) }
  // The node registered this agent's host name: nearest of all, and a candidate for local reads.
  onThisHost (n: NodeView): boolean { return n.host === this.host }
  list (): NodeView[] { return [...this.nodes.values()] }

  // Reads ride a stream of their own: a large read answer then never queues behind writes
  // (grpc-js sends one message at a time per stream), and reads need no ordering.
  readClient (id: string): StorageClient {
    return this.client(id, 'read')
  }

  client (id: string, purpose: 'io' | 'read' = 'io'): StorageClient {
    const key = purpose === 'io' ? id : `${id}#${purpose}`
    let c = this.clients.get(key)
    if (c === undefined) {
      const node = this.nodes.get(id)
      if (node === undefined) throw UkaiError.unavailable(`storage node ${id} is not registered`)
      const address = this.addressOf(node)
      let progress = this.progress.get(id)
      if (progress === undefined) { progress = new NodeProgress(); this.progress.set(id, progress) }
      c = new StorageClient({ nodeId: id, address, progress, hungAfterMs: this.replicaHungMs })
      this.clients.set(key, c)
      this.log.debug({ node: id, address }, 'connected to storage node')
    }
    return c
  }

  // Per node, the `q` quantile of this host's acknowledged writes to it since the last call, in
  // ms (a node written to meanwhile only); each window starts afresh (rtt-monitor.ts publishes it).
  takeWriteLatencyMs (q: number): Map<string, number> {
    const out = new Map<string, number>()
    for (const [id, p] of this.progress) {
      const ms = p.writeLatency.take(q)
      if (ms !== null) out.set(id, ms)
    }
    return out
  }

  // The node has answered nothing for the hung bound with requests outstanding (client.ts).
  isHung (id: string): boolean { return this.progress.get(id)?.hung === true }

  // How near a node is from this host (meta/placement-policy.ts nodeDistance: lower is nearer).
  distance (id: string): number {
    return nodeDistance(this.nodes.get(id), this.vantage)
  }

  // Tells each of `nodes` that `leaseEpoch` is the disk's newest (a new lease, a fencing epoch):
  // from then on they refuse older writers. A node that cannot be reached is logged and skipped.
  async fence (nodes: Iterable<string>, diskUuid: string, leaseEpoch: number, log: Logger = this.log): Promise<void> {
    await Promise.all([...nodes].map(async (node) => {
      try {
        await this.client(node).fence({ diskUuid, leaseEpoch })
      } catch (err) {
        log.warn({ node, err: String(err) }, 'could not fence node (its writes fail over to stale marking)')
      }
    }))
  }

  close (): Promise<void> { return this.life.close() }
}

// A pool for one operation (an export, an import: the CLI's, or the tenant API's on an agent),
// closed when `fn` is done.
export async function withNodePool<T> (meta: MetaStore, opts: { host: string, site: string, logger?: Logger }, fn: (pool: NodePool) => Promise<T>): Promise<T> {
  const pool = new NodePool(meta, opts)
  await pool.start()
  try {
    return await fn(pool)
  } finally {
    await pool.close()
  }
}
