// Duty: run every relocation nobody runs. A relocation record that is active (copying, flipping,
// a cancel rolling back) while nobody holds the disk's lease and no lease-free run is alive (its
// open record `<host>.relocation` is an ephemeral, gone with a dead CLI) is run here, lease-free
// (relocate/run-here.ts). Before the controller such a record waited for good: `relocate status`
// showed a dead CLI as "copying", `prepare-migration` waited for a writer that never came.
//
// Never fighting a lease holder: a disk with a lease is skipped, and a VM that takes the lease
// mid-run moves the fence, which stops this run at its next step (its copies are refused, its map
// changes do not commit); the holder's runner finishes from the map as it is. When the controller
// lives in an agent, its runner is the agent's, so the agent's own lease on the disk replaces
// this run at once (relocate/runner.ts maybeStart).
import { isUkaiError, safetyCatch } from '../errors'
import { readLease } from '../meta/lease'
import { runOrphanedRelocation, leaseFreeRunIn } from '../relocate/run-here'
import { isActive } from '../relocate/start'
import { Logger } from '../log'
import { ControllerDuty, DutyContext } from './duty'
import { PeriodicSweep } from './periodic-sweep'
import { Refusals } from './refusals'

// How often every disk's relocation record is looked at. A dead CLI's open record vanishes a
// session timeout (10 s) after it died, so this adds at most a few seconds to that.
export const ORPHAN_SWEEP_INTERVAL_MS = 3000
// Lease-free runs at once (each copies with its own window and rate).
export const ORPHAN_RUNS_MAX = 4

export class OrphanRelocations implements ControllerDuty {
  readonly name = 'orphaned-relocations'
  private readonly ctx: DutyContext
  private readonly log: Logger
  private readonly refusals: Refusals
  private readonly running = new Map<string, Promise<void>>()
  private readonly sweeper: PeriodicSweep

  constructor (ctx: DutyContext, intervalMs = ORPHAN_SWEEP_INTERVAL_MS) {
    this.ctx = ctx
    this.log = ctx.logger.child({ component: 'controller', duty: this.name })
    this.refusals = new Refusals(this.log)
    this.sweeper = new PeriodicSweep({ intervalMs, log: this.log, what: 'orphaned-relocation', sweep: async () => { await this.sweep() } })
  }

  async start (): Promise<void> { this.sweeper.sweepIn(0) }

  private async sweep (): Promise<void> {
    const { meta } = this.ctx
    for (const name of await meta.listDiskNames()) {
      if (this.sweeper.closing) return
      if (this.running.has(name) || this.running.size >= ORPHAN_RUNS_MAX) continue
      try {
        const rec = await meta.getRelocation(name)
        if (rec === null || !isActive(rec)) { this.refusals.clear(name); continue }
        if ((await readLease(meta, name)).holder !== null) continue            // the holder runs it
        const other = leaseFreeRunIn(await meta.listOpens(name))
        if (other !== null) continue                                            // a live CLI or agent runs it
        this.refusals.clear(name)
        this.run(name, rec.state)
      } catch (err) {
        if (!isUkaiError(err)) throw err
        if (err.code === 'NOT_FOUND' || err.code === 'ZK_UNAVAILABLE') continue  // deleted meanwhile; next sweep
        this.refusals.refuse(name, err.message, 'relocation record refused; the disk is skipped until it is fixed')
      }
    }
  }

  private run (name: string, state: string): void {
    const { meta, pool, runner, host } = this.ctx
    this.log.info({ disk: name, state }, 'nobody runs this relocation: running it without the lease')
    const p = runOrphanedRelocation({ meta, pool, runner, host, logger: this.ctx.logger }, name).then((outcome) => {
      this.log.info({ disk: name, outcome }, 'orphaned relocation run ended')
    }, (err) => {
      safetyCatch(err)
      this.log.warn({ disk: name, err: String(err) }, 'orphaned relocation run failed; the next sweep looks again')
    }).finally(() => { this.running.delete(name) })
    this.running.set(name, p)
  }

  status (): { state: string, detail: Record<string, unknown> } {
    return { state: this.running.size > 0 ? 'running' : 'idle', detail: { running: [...this.running.keys()], refused: this.refusals.snapshot(), lastSweepAtMs: this.sweeper.lastSweepAtMs } }
  }

  // Stops at once: each run is superseded by a fencing epoch the next leader takes (and its
  // record says where it got to), so nothing is waited out but the runs' own unwinding.
  async close (): Promise<void> {
    const closing = this.sweeper.close()
    for (const name of this.running.keys()) this.ctx.runner.abortLeaseFree(name)
    await closing
    await Promise.all(this.running.values())
  }
}
