// The duties every controller leader runs, in start order. Another duty (node lifecycle, scrub)
// is one more factory here; each gets the same context (duty.ts).
import { DutyFactory } from './duty'
import { OrphanRelocations } from './orphan-relocations'
import { RepairDuty, RepairDutyOptions } from './repair-duty'

export interface DutyOptions { repair?: RepairDutyOptions }

export function defaultDuties (opts: DutyOptions = {}): DutyFactory[] {
  return [
    ctx => new OrphanRelocations(ctx),
    ctx => new RepairDuty(ctx, opts.repair)
  ]
}
