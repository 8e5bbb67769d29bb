// Duty: act on the storage nodes' background scrub findings (admin/scrub-findings.ts). A node's
// scrub finds rot in a block nobody reads but cannot mark it (it has no placement map); this
// duty asks every live node for its findings each interval, scrubs the disks with a new one,
// which marks the bad replicas stale, and the repair duty (or the lease holder) copies them
// again — no operator. The findings live on the nodes, so a new leader simply asks again (a
// finding already acted on is scrubbed once more, harmlessly: the disk's own check decides).
import { actOnScrubFindings } from '../admin/scrub-findings'
import { Logger } from '../log'
import { ControllerDuty, DutyContext } from './duty'
import { PeriodicSweep } from './periodic-sweep'

// A node's background pass runs once a day by default: a minute from its finding to the stale
// mark is nothing next to that, and asking each node every minute costs one small RPC.
export const SCRUB_FINDINGS_INTERVAL_MS = 60_000

export interface ScrubFindingsOptions { intervalMs?: number }

export class ScrubFindingsDuty implements ControllerDuty {
  readonly name = 'scrub-findings'
  private readonly log: Logger
  private readonly seen = new Map<string, number>()
  private readonly unreachable = new Set<string>()
  private readonly sweeper: PeriodicSweep
  private findings = 0
  private disksScrubbed = 0
  private markedStale = 0
  private unrepairable = 0

  constructor (private readonly ctx: DutyContext, opts: ScrubFindingsOptions = {}) {
    this.log = ctx.logger.child({ component: 'controller', duty: this.name })
    this.sweeper = new PeriodicSweep({ intervalMs: opts.intervalMs ?? SCRUB_FINDINGS_INTERVAL_MS, log: this.log, what: 'scrub-findings', sweep: async () => { await this.sweep() } })
  }

  async start (): Promise<void> { this.sweeper.sweepIn(0) }

  private async sweep (): Promise<void> {
    const pass = await actOnScrubFindings(this.ctx.meta, this.seen, { logger: this.log, unreachable: this.unreachable })
    this.findings = pass.findings
    for (const r of pass.reports) {
      this.disksScrubbed++
      this.markedStale += r.markedStale
      this.unrepairable += r.unrepairable.length
    }
  }

  status (): { state: string, detail: Record<string, unknown> } {
    return { state: 'idle', detail: { findings: this.findings, disksScrubbed: this.disksScrubbed, markedStale: this.markedStale, unrepairable: this.unrepairable, lastSweepAtMs: this.sweeper.lastSweepAtMs } }
  }

  async close (): Promise<void> { await this.sweeper.close() }
}
