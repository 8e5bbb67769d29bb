// The controller's node-lifecycle duty (DESIGN.md "Self-healing"): it follows the storage nodes'
// liveness ephemerals, records since when a node is down (in ZooKeeper, so a standby that takes
// over keeps counting from the same moment), marks a node out once it has been down longer than
// the cluster's down-out-ms, and moves the replicas of every disk that has one on an out,
// draining or removed node onto other nodes (relocate/evacuate.ts: same site first, never two
// replicas on one node, and the last in-sync replica is never dropped). A node that comes back
// before it is out copies nothing: its stale blocks are repaired like any others. A node that
// comes back after it is out is up again (it is simply no longer a target of its old disks).
//
// It records relocations; it does not run them: the lease holder's runner runs a leased disk's,
// the controller's orphan duty (or a waiting CLI) an unleased one's. One attempt per disk per
// retry interval: a disk that cannot move (no node has room, a relocation already running, the
// only in-sync copy of a block is on the dead node) is logged and tried again later, never in a
// tight loop.
import { isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { downOutMsOf, isLeaving } from '../meta/node-state'
import { MetaStore } from '../meta/store'
import { startEvacuation } from '../relocate/evacuate'
import { ControllerDuty } from './duty'

// How often the duty looks even when no watch fired (a node's down time runs out without any
// event; a disk's evacuation waits for a running relocation to end).
export const LIFECYCLE_TICK_MS_DEFAULT = 2000
// At most one evacuation attempt per disk this often.
export const EVACUATION_RETRY_MS_DEFAULT = 10_000

export interface NodeLifecycleOptions {
  meta: MetaStore
  logger?: Logger
  tickMs?: number
  retryMs?: number
  rateBytesPerSec?: number  // copy rate cap of each evacuation (0: unlimited)
}

export class NodeLifecycleDuty implements ControllerDuty {
  readonly name = 'node-lifecycle'
  private readonly meta: MetaStore
  private readonly log: Logger
  private readonly tickMs: number
  private readonly retryMs: number
  private readonly rateBytesPerSec: number
  private readonly lastAttemptMs = new Map<string, number>()
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private again = false
  private stopped = true
  private unsubscribe: (() => void) | null = null
  private watching = false // one watch on the live-node list at a time (a ZooKeeper watch fires once)

  constructor (opts: NodeLifecycleOptions) {
    this.meta = opts.meta
    this.log = (opts.logger ?? silentLogger).child({ component: 'node-lifecycle' })
    this.tickMs = opts.tickMs ?? LIFECYCLE_TICK_MS_DEFAULT
    this.retryMs = opts.retryMs ?? EVACUATION_RETRY_MS_DEFAULT
    this.rateBytesPerSec = opts.rateBytesPerSec ?? 0
  }

  async start (): Promise<void> {
    if (!this.stopped) return
    this.stopped = false
    // Watches die with an expired session: set them again with the new one.
    this.unsubscribe = this.meta.onSession(() => { this.watching = false; this.kick() })
    this.kick()
  }

  async close (): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    this.unsubscribe = null
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.running
  }

  // One pass now (or right after the one running), then every tickMs.
  private kick (): void {
    if (this.stopped) return
    if (this.running !== null) { this.again = true; return }
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null }
    this.running = this.pass().catch((err) => {
      safetyCatch(err)
      this.log.warn({ err: String(err) }, 'node-lifecycle pass failed; trying again shortly')
    }).finally(() => {
      this.running = null
      if (this.stopped) return
      if (this.again) { this.again = false; this.kick(); return }
      this.timer = setTimeout(() => { this.timer = null; this.kick() }, this.tickMs)
      this.timer.unref()
    })
  }

  // One look at the cluster: node states first, then the disks of leaving nodes.
  async pass (): Promise<void> {
    if (!this.watching) {
      this.watching = true
      await this.meta.watchAliveNodeList(() => { this.watching = false; this.kick() }).catch((err) => { this.watching = false; throw err })
    }
    const downOutMs = downOutMsOf(await this.meta.config())
    const nodes = await this.meta.listNodes()
    const now = Date.now()
    for (const n of nodes) {
      const l = n.lifecycle
      if (n.alive === null && l?.downSinceMs == null) {
        await this.meta.updateNodeLifecycle(n.id, cur => ({ ...cur, downSinceMs: now }))
        this.log.warn({ node: n.id, downOutMs }, 'storage node is down; it is marked out if it stays down')
      } else if (n.alive === null && l !== null && l.downSinceMs !== null && l.out === null && now - l.downSinceMs >= downOutMs) {
        await this.meta.updateNodeLifecycle(n.id, cur => ({ ...cur, out: { sinceMs: now, why: 'down' } }))
        this.log.warn({ node: n.id, downForMs: now - l.downSinceMs }, 'storage node is out: its replicas are made again on other nodes')
      } else if (n.alive !== null && l !== null && (l.downSinceMs !== null || l.out !== null)) {
        const wasOut = l.out !== null
        await this.meta.updateNodeLifecycle(n.id, cur => {
          const next = { ...cur, downSinceMs: null, out: null }
          return next.drainingSinceMs === null && next.removedAtMs === null ? null : next
        })
        this.log.info({ node: n.id, wasOut }, 'storage node is up again')
      }
    }
    const lifecycles = await this.meta.listNodeLifecycles()
    const leaving = new Set(lifecycles.filter(isLeaving).map(l => l.id))
    if (leaving.size === 0) return
    const fresh = await this.meta.listNodes()
    const named = new Set<string>()
    let everyMapRead = true
    for (const name of await this.meta.listDiskNames()) {
      if (this.stopped) return
      if (!await this.evacuate(name, leaving, fresh, named)) everyMapRead = false
    }
    // A removed node's tombstone goes once no map names it any more (known only when every map was read).
    if (!everyMapRead) return
    for (const l of lifecycles) {
      if (l.removedAtMs !== null && !named.has(l.id)) {
        await this.meta.updateNodeLifecycle(l.id, () => null)
        this.log.info({ node: l.id }, 'removed storage node no longer holds any replica; its tombstone is gone')
      }
    }
  }

  // Adds the nodes of the disk's map to `named`; false when the map could not be read.
  private async evacuate (name: string, leaving: Set<string>, nodes: Awaited<ReturnType<MetaStore['listNodes']>>, named: Set<string>): Promise<boolean> {
    const onDisk = new Set<string>()
    try {
      const disk = await this.meta.getDisk(name)
      for (const seg of await this.meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) onDisk.add(r.node)
    } catch (err) {
      if (!isUkaiError(err)) throw err
      if (err.code === 'NOT_FOUND') return true // the disk was deleted meanwhile
      this.log.warn({ disk: name, code: err.code, err: err.message }, 'could not read the disk\'s placement; trying again later')
      return false
    }
    for (const id of onDisk) named.add(id)
    if (![...leaving].some(id => onDisk.has(id))) return true
    if (Date.now() - (this.lastAttemptMs.get(name) ?? 0) < this.retryMs) return true
    this.lastAttemptMs.set(name, Date.now())
    try {
      const ev = await startEvacuation(this.meta, name, leaving, nodes, { rateBytesPerSec: this.rateBytesPerSec })
      if (ev !== null) this.log.info({ disk: name, replaced: ev.replaced, targets: ev.targets }, 'replicas moving off leaving nodes')
    } catch (err) {
      if (!isUkaiError(err)) throw err
      // NOT_ENOUGH_NODES (nowhere to go), BUSY (a relocation runs), ZooKeeper trouble: next time.
      if (err.code !== 'NOT_FOUND') this.log.warn({ disk: name, code: err.code, err: err.message }, 'replicas of a leaving node could not move yet; trying again later')
    }
    return true
  }
}
