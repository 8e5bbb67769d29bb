// Duty: automatic repair. A replica marked stale while its node was away (or hung, or full) is
// copied again once the node is back — only the blocks marked stale, every version — without an
// operator: the same plan `ukai disk repair` makes (relocate/repair.ts), recorded as a relocation
// (relocate/start.ts). A leased disk's holder runs it (its runner follows the record), an
// unleased one is run by the orphaned-relocation duty.
//
// When: a node's liveness ephemeral appearing (watched) sweeps every disk shortly after, and a
// periodic sweep catches the rest (a replica marked stale while its node stayed up). Rate limits:
// one relocation per disk at a time (a disk with an active relocation is skipped, and one whose
// paused relocation is an operator's move: theirs to resume or cancel; a paused repair is planned
// again after 4 s, doubling up to REPAIR_PAUSED_RETRY_MS), at most REPAIRS_CONCURRENT_MAX repairs of this duty at once
// across the cluster, each copying at most `rateBytesPerSec`.
// A plan that would replace a *dead* node is not started here: the node may come back with its
// data, and replacing a node that stays down is the node-lifecycle duty's call (down-out time).
// `ukai disk repair` does replace a dead node when an operator asks.
import { isUkaiError, safetyCatch } from '../errors'
import { Logger } from '../log'
import { paceSettingsOf } from '../relocate/copy-pace'
import { planRelocation } from '../relocate/plan'
import { planRepair } from '../relocate/repair'
import { isActive, startRelocation } from '../relocate/start'
import { busyNodes, REPAIR_BUSY_RTT_MS_DEFAULT } from './busy-nodes'
import { ControllerDuty, DutyContext } from './duty'
import { PeriodicSweep } from './periodic-sweep'
import { Refusals } from './refusals'

export const REPAIR_SWEEP_INTERVAL_MS = 30_000
// After a node came back: let its usage report land and the agents reconnect before planning.
export const REPAIR_AFTER_NODE_UP_MS = 2000
export const REPAIRS_CONCURRENT_MAX = 2
// A repair that paused (its source or target went away mid-copy) is planned again this much later.
export const REPAIR_PAUSED_RETRY_MS = 60_000
// …first after this, doubling each time it pauses again, up to REPAIR_PAUSED_RETRY_MS: a repair
// of a disk a VM keeps rewriting pauses after a few rounds ("blocks keep falling out of sync") and
// usually succeeds at once when tried again; waiting the full minute made a 15 s outage of a
// busy disk's node take 66 s to heal (bench/chaos-heal.ts node-restarted), 1 s of it copying.
export const REPAIR_PAUSED_RETRY_FIRST_MS = 4000
// 0: unlimited. A repair competes with VM I/O on the nodes; the executor's window bounds it too.
export const REPAIR_RATE_BYTES_PER_SEC_DEFAULT = 0
// A watch is set only by a read that succeeded: after a failed one, read again this much later.
const WATCH_RETRY_MS = 1000

// busyRttMs: a repair is not started while a node it would use, and no agent writes to, answers
// the nearest agent's pings this slowly (busy-nodes.ts: a node agents write to is judged by their
// write p99 against its idle value, as the copy pace does; 0: pings never postpone).
export interface RepairDutyOptions { intervalMs?: number, rateBytesPerSec?: number, concurrentMax?: number, busyRttMs?: number }

export class RepairDuty implements ControllerDuty {
  readonly name = 'automatic-repair'
  private readonly ctx: DutyContext
  private readonly log: Logger
  private readonly refusals: Refusals
  private readonly rateBytesPerSec: number
  private readonly concurrentMax: number
  private readonly busyRttMs: number
  private readonly pausedTries = new Map<string, number>()  // disk → paused repairs retried in a row
  private postponed = 0
  private readonly started = new Map<string, string>()  // disk → id of the relocation record this duty started
  private alive: Map<string, number> | null = null
  private readonly sweeper: PeriodicSweep
  private capped = false
  private closed = false
  private repairsStarted = 0
  private unsubscribeSession: (() => void) | null = null

  constructor (ctx: DutyContext, opts: RepairDutyOptions = {}) {
    this.ctx = ctx
    this.log = ctx.logger.child({ component: 'controller', duty: this.name })
    this.refusals = new Refusals(this.log)
    // A sweep that hit the cap of concurrent repairs looks again soon, not a whole interval later.
    this.sweeper = new PeriodicSweep({
      intervalMs: opts.intervalMs ?? REPAIR_SWEEP_INTERVAL_MS,
      log: this.log,
      what: 'repair',
      sweep: async () => {
        this.capped = false
        await this.sweep()
        return this.capped ? REPAIR_AFTER_NODE_UP_MS : undefined
      }
    })
    this.rateBytesPerSec = opts.rateBytesPerSec ?? REPAIR_RATE_BYTES_PER_SEC_DEFAULT
    this.concurrentMax = opts.concurrentMax ?? REPAIRS_CONCURRENT_MAX
    this.busyRttMs = opts.busyRttMs ?? REPAIR_BUSY_RTT_MS_DEFAULT
  }

  async start (): Promise<void> {
    this.unsubscribeSession = this.ctx.meta.onSession(() => this.watchAlive())
    this.watchAlive()
    this.sweeper.sweepIn(REPAIR_AFTER_NODE_UP_MS)
  }

  // Watches the live-node list; a node that (re)appears triggers a sweep.
  private watchAlive (): void {
    if (this.closed) return
    const { meta } = this.ctx
    meta.watchAliveNodeList(() => this.watchAlive()).then(async () => await meta.listNodes()).then((nodes) => {
      // id → start time: a node restarted within its old session's timeout never leaves the
      // list, but its start time changes.
      const now = new Map(nodes.filter(n => n.alive !== null).map(n => [n.id, n.alive?.startedAtMs ?? 0]))
      const before = this.alive
      const back = before === null ? [] : [...now].filter(([id, startedAtMs]) => before.get(id) !== startedAtMs).map(([id]) => id)
      this.alive = now
      if (back.length > 0) {
        this.log.info({ nodes: back }, 'storage node(s) back: their stale replicas are repaired shortly')
        this.sweeper.sweepIn(REPAIR_AFTER_NODE_UP_MS)
      }
    }, (err) => {
      safetyCatch(err)
      setTimeout(() => this.watchAlive(), WATCH_RETRY_MS).unref()
    })
  }

  private async sweep (): Promise<void> {
    const { meta } = this.ctx
    for (const name of await meta.listDiskNames()) {
      if (this.closed) return
      try {
        await this.consider(name)
      } catch (err) {
        if (!isUkaiError(err)) throw err
        if (err.code === 'ZK_UNAVAILABLE' || err.code === 'NOT_FOUND') continue
        this.refusals.refuse(name, err.message, 'automatic repair refused for this disk')
      }
    }
  }

  private async consider (name: string): Promise<void> {
    const { meta } = this.ctx
    const rec = await meta.getRelocation(name)
    if (rec !== null && this.started.get(name) === rec.id && !isActive(rec)) this.started.delete(name)
    if (rec !== null && isActive(rec)) return  // one relocation per disk at a time
    if (rec !== null && rec.state === 'paused') {
      // An operator's move (it names a placement) waits for them; a paused repair (a node went
      // away again mid-copy) is planned afresh after a while.
      if (rec.placement !== undefined) return
      const pausedAtMs = Math.max(rec.createdAtMs, rec.progress.updatedAtMs, rec.finishedAtMs)
      const tries = this.pausedTries.get(name) ?? 0
      const waitMs = Math.min(REPAIR_PAUSED_RETRY_MS, REPAIR_PAUSED_RETRY_FIRST_MS * 2 ** tries)
      const leftMs = pausedAtMs + waitMs - Date.now()
      if (leftMs > 0) { this.sweeper.sweepIn(leftMs); return }
      this.pausedTries.set(name, tries + 1)
      this.log.info({ disk: name, reason: rec.reason, tries: tries + 1 }, 'a paused repair is tried again')
    }
    const repair = await planRepair(meta, name)
    if (repair === null) { this.refusals.clear(name); this.started.delete(name); this.pausedTries.delete(name); return }
    const dead = repair.replaced.filter(r => r.why === 'dead').map(r => r.node)
    if (dead.length > 0) { this.refusals.refuse(name, `waits for node(s) ${dead.join(',')}`, 'stale replicas on a node that is down: not repaired until it is back (or replaced by the node-lifecycle duty, or ukai disk repair)'); return }
    if (await this.activeRepairs() >= this.concurrentMax) { this.capped = true; return }  // look again soon
    const [reports, config] = await Promise.all([meta.listRtts(), meta.config()])
    const busy = busyNodes(reports, repair.targets, { nowMs: Date.now(), riseMs: paceSettingsOf(config).riseMs, pingThresholdMs: this.busyRttMs })
    if (busy.length > 0) {
      // The guests are waiting on these nodes: no repair adds to it now; looked at again soon.
      // Shown with this sweep's figures; logged once per set of slow nodes, not every 2 s.
      this.postponed++
      this.capped = true
      this.refusals.refuse(name, `postponed: ${busy.map(b => b.why).join('; ')}`, 'automatic repair postponed while the nodes it would use are slow for the guests', `postponed: ${busy.map(b => b.node).join(',')}`)
      return
    }
    const plan = await planRelocation(meta, { disk: name, nodes: repair.targets, replicas: repair.targets.length, probeBudgetMs: 0 })
    const started = await startRelocation(meta, plan, this.rateBytesPerSec)
    this.started.set(name, started.id)
    this.repairsStarted++
    this.refusals.clear(name)
    this.log.warn({ disk: name, staleBlocks: repair.staleBlocks, belowReplicaBlocks: repair.belowReplicaBlocks, targets: repair.targets, replaced: repair.replaced }, 'automatic repair started')
  }

  // This duty's repairs still running (their records say so; a finished one leaves the count).
  private async activeRepairs (): Promise<number> {
    let n = 0
    for (const [disk, id] of this.started) {
      const rec = await this.ctx.meta.getRelocation(disk).catch((err) => { safetyCatch(err); return null })
      if (rec !== null && rec.id === id && isActive(rec)) n++
      else this.started.delete(disk)
    }
    return n
  }

  status (): { state: string, detail: Record<string, unknown> } {
    return {
      state: this.started.size > 0 ? 'repairing' : 'idle',
      detail: { repairing: [...this.started.keys()], repairsStarted: this.repairsStarted, postponedForSlowNodes: this.postponed, refused: this.refusals.snapshot(), lastSweepAtMs: this.sweeper.lastSweepAtMs }
    }
  }

  // The repairs started stay recorded: whoever runs them (a lease holder, the next leader's
  // orphan duty) finishes them.
  async close (): Promise<void> {
    this.closed = true
    this.unsubscribeSession?.()
    await this.sweeper.close()
  }
}
