// One StorageClient per storage node, kept current from ZooKeeper (node records and liveness),
// and the order in which this host prefers replicas: same host, then same site, then the rest.
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { MetaStore, NodeView } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import { UkaiError } from '../errors'

export class NodePool {
  private readonly meta: MetaStore
  readonly host: string
  readonly site: string
  private readonly log: Logger
  private nodes = new Map<string, NodeView>()
  private readonly clients = new Map<string, StorageClient>()
  private closed = false
  private refreshing: Promise<void> | null = null

  constructor (meta: MetaStore, opts: { host: string, site: string, logger?: Logger }) {
    this.meta = meta
    this.host = opts.host
    this.site = opts.site
    this.log = opts.logger ?? silentLogger
  }

  async start (): Promise<void> {
    await this.refresh()
  }

  // Re-reads the node list; the watch calls it again on the next change.
  refresh (): Promise<void> {
    if (this.refreshing !== null) return this.refreshing
    this.refreshing = (async () => {
      try {
        const list = await this.meta.listNodes(() => { if (!this.closed) this.refresh().catch(safetyCatch) })
        const next = new Map(list.map(n => [n.id, n]))
        for (const [id, client] of this.clients) {
          const n = next.get(id)
          if (n === undefined || n.address !== this.nodes.get(id)?.address) {
            client.close()
            this.clients.delete(id)
          }
        }
        this.nodes = next
      } finally {
        this.refreshing = null
      }
    })()
    return this.refreshing
  }

  get (id: string): NodeView | undefined { return this.nodes.get(id) }
  list (): NodeView[] { return [...this.nodes.values()] }

  client (id: string): StorageClient {
    let c = this.clients.get(id)
    if (c === undefined) {
      const node = this.nodes.get(id)
      if (node === undefined) throw UkaiError.unavailable(`storage node ${id} is not registered`)
      c = new StorageClient({ nodeId: id, address: node.alive?.address ?? node.address })
      this.clients.set(id, c)
      this.log.debug({ node: id, address: node.address }, 'connected to storage node')
    }
    return c
  }

  // Lower is nearer. Dead nodes sort last but stay candidates: liveness in ZK lags a restart.
  distance (id: string): number {
    const n = this.nodes.get(id)
    if (n === undefined) return 1000
    let d = n.host === this.host ? 0 : n.site === this.site ? 1 : 2
    if (n.alive === null) d += 10
    return d
  }

  close (): void {
    this.closed = true
    for (const c of this.clients.values()) c.close()
    this.clients.clear()
  }
}
