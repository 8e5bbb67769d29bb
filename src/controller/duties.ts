// The duties every controller leader runs, in start order. Another duty (scrub, …) is one more
// factory here; each gets the same context (duty.ts).
import { DutyFactory } from './duty'
import { NodeLifecycleDuty, NodeLifecycleOptions } from './node-lifecycle'
import { OrphanRelocations } from './orphan-relocations'
import { RepairDuty, RepairDutyOptions } from './repair-duty'
import { ScrubFindingsDuty, ScrubFindingsOptions } from './scrub-findings'

export interface DutyOptions { repair?: RepairDutyOptions, nodeLifecycle?: Omit<NodeLifecycleOptions, 'meta' | 'logger'>, scrubFindings?: ScrubFindingsOptions }

export function defaultDuties (opts: DutyOptions = {}): DutyFactory[] {
  return [
    ctx => new OrphanRelocations(ctx),
    ctx => new RepairDuty(ctx, opts.repair),
    // Marks nodes down → out after down-out-ms and records their disks' evacuations (and those
    // of draining nodes); the orphan duty above, or a disk's lease holder, runs them.
    ctx => new NodeLifecycleDuty({ ...opts.nodeLifecycle, meta: ctx.meta, logger: ctx.logger }),
    // The nodes' background scrub findings → stale marks → the repair above.
    ctx => new ScrubFindingsDuty(ctx, opts.scrubFindings)
  ]
}
