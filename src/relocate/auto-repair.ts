// The agent's own repair after a full node: when a replica of a disk this host holds the lease of
// is marked stale because its node answered NO_SPACE, those blocks are left with fewer copies
// than the disk asks for. Shortly after (the failing writes of one burst come together), this
// plans a repair (src/relocate/repair.ts: the full node is replaced by a live node with room, its
// site first) and records it as a relocation; the relocation runner of this host, which follows
// the records of the disks it holds, runs it under the lease like any other relocation — copy,
// mark in sync, flip, and only then drop the full node. Nothing runs when the lease is not here,
// when another relocation of the disk is active, or when no node has room (logged; `ukai disk
// info` shows the blocks below their replica count, `ukai disk repair` retries).
import { isUkaiError, safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { MetaStore } from '../meta/store'
import { planRelocation } from './plan'
import { planRepair } from './repair'
import { isActive, startRelocation } from './start'

// A burst of failed writes marks blocks stale one by one: plan once it has settled.
export const AUTO_REPAIR_DELAY_MS = 2000
// At most one attempt per disk this often (a node that stays full keeps failing writes).
export const AUTO_REPAIR_INTERVAL_MS = 30_000

export interface LeasedDisk { readonly name: string, readonly leaseEpoch: number | null }

export class AutoRepair {
  private readonly meta: MetaStore
  private readonly log: Logger
  private readonly delayMs: number
  private readonly intervalMs: number
  private readonly pending = new Map<string, { timer: NodeJS.Timeout, fullNodes: Set<string> }>()
  private readonly lastAttemptMs = new Map<string, number>()
  private closed = false

  constructor (opts: { meta: MetaStore, logger?: Logger, delayMs?: number, intervalMs?: number }) {
    this.meta = opts.meta
    this.log = (opts.logger ?? silentLogger).child({ component: 'auto-repair' })
    this.delayMs = opts.delayMs ?? AUTO_REPAIR_DELAY_MS
    this.intervalMs = opts.intervalMs ?? AUTO_REPAIR_INTERVAL_MS
  }

  // The agent's replicaStale hook: a full node, and a replica whose bytes failed their checksum
  // (the node is fine: the block is copied again onto it), are repaired without an operator (a
  // node that is down may come back with its data; that is `ukai disk repair`'s or the
  // controller's call).
  replicaStale (disk: LeasedDisk, node: string, code: string): void {
    if (this.closed || (code !== 'NO_SPACE' && code !== 'CHECKSUM')) return
    const cur = this.pending.get(disk.name)
    if (cur !== undefined) { if (code === 'NO_SPACE') cur.fullNodes.add(node); return }
    const waitMs = Math.max(this.delayMs, (this.lastAttemptMs.get(disk.name) ?? 0) + this.intervalMs - Date.now())
    const entry = { timer: setTimeout(() => { this.run(disk, entry.fullNodes).catch(safetyCatch) }, waitMs), fullNodes: new Set(code === 'NO_SPACE' ? [node] : []) }
    entry.timer.unref()
    this.pending.set(disk.name, entry)
  }

  private async run (disk: LeasedDisk, fullNodes: Set<string>): Promise<void> {
    this.pending.delete(disk.name)
    if (this.closed) return
    this.lastAttemptMs.set(disk.name, Date.now())
    const log = this.log.child({ disk: disk.name, fullNodes: [...fullNodes] })
    // The runner starts relocations only where the lease is; without it, leave it to an operator.
    if (disk.leaseEpoch === null) { log.warn('a full node left blocks below their replica count; the lease is not here: run ukai disk repair'); return }
    try {
      const existing = await this.meta.getRelocation(disk.name)
      if (existing !== null && isActive(existing)) { log.info({ state: existing.state }, 'automatic repair waits: a relocation of the disk is active'); return }
      const repair = await planRepair(this.meta, disk.name, { fullNodes: [...fullNodes] })
      if (repair === null) return
      log.warn({ belowReplicaBlocks: repair.belowReplicaBlocks, replaced: repair.replaced }, 'blocks below their replica count (a node filled up, or a replica failed its checksum): repairing')
      const plan = await planRelocation(this.meta, { disk: disk.name, nodes: repair.targets, replicas: repair.targets.length, probeBudgetMs: 0 })
      await startRelocation(this.meta, plan, 0)
      log.info({ targets: repair.targets }, 'automatic repair started')
    } catch (err) {
      if (!isUkaiError(err)) throw err
      // NOT_ENOUGH_NODES (no node has room), BUSY (a relocation started meanwhile), ZooKeeper.
      log.warn({ err: err.message, code: err.code }, 'automatic repair not started; blocks stay below their replica count (ukai disk info)')
    }
  }

  private readonly life = new Lifecycle({
    release: () => {
      this.closed = true
      for (const p of this.pending.values()) clearTimeout(p.timer)
      this.pending.clear()
    }
  })

  close (): Promise<void> { return this.life.close() }
}
