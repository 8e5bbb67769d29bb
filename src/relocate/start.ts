// Recording a relocation: the plan becomes /ukai/disks/<name>/relocation, which the lease holder's
// runner picks up (or whoever runs it when nobody holds the lease). Used by `ukai relocate`, the
// migration commands and the libvirt hook.
import { randomUUID } from 'node:crypto'
import { UkaiError } from '../errors'
import { PlacementPolicy, RelocationRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { RelocationPlan } from './plan'

export function isActive (r: RelocationRecord): boolean {
  return r.state === 'copying' || r.state === 'flipping' || (r.state === 'cancelled' && r.finishedAtMs === 0)
}

// Refuses while another relocation of the disk is active; a finished, paused or cancelled one is
// replaced (running `ukai relocate` again is how a paused relocation resumes).
// `placement`: the disk's placement policy once done (a move; a repair keeps the disk's own).
export async function startRelocation (meta: MetaStore, plan: RelocationPlan, rateBytesPerSec: number, opts: { placement?: PlacementPolicy } = {}): Promise<RelocationRecord> {
  const name = plan.disk
  const existing = await meta.getRelocation(name)
  if (existing !== null) {
    if (existing.state === 'copying' || existing.state === 'flipping') throw UkaiError.busy(`disk '${name}' is already being relocated to ${existing.targetNodes.join(',')}; see 'ukai relocate status ${name}'`)
    if (existing.state === 'cancelled' && existing.finishedAtMs === 0) throw UkaiError.busy(`disk '${name}': a cancelled relocation is still being rolled back`)
    await meta.removeRelocation(name)
  }
  // Resuming a paused relocation: the targets it added still count as added, so a cancel of this
  // run takes them back too (they hold the disk only because of the first run).
  const carried = existing?.state === 'paused' ? existing.addedNodes.filter(n => plan.targetNodes.includes(n)) : []
  const now = Date.now()
  const rec: RelocationRecord = {
    v: 1, id: randomUUID(), disk: name, targetNodes: plan.targetNodes, dropNodes: plan.dropNodes, addedNodes: [...new Set([...plan.addedNodes, ...carried])],
    rateBytesPerSec, state: 'copying', reason: '', executor: '',
    plan: { blocks: plan.blocks, writtenBlocks: plan.writtenBlocks, bytes: plan.bytes },
    progress: { blocks: 0, bytes: 0, updatedAtMs: now }, createdAtMs: now, finishedAtMs: 0,
    ...(opts.placement !== undefined ? { placement: opts.placement } : {}),
    // …and it starts at the pace the paused run had learned (relocate/copy-pace.ts resumedPace).
    ...(existing?.state === 'paused' && existing.pace !== undefined ? { pace: existing.pace } : {})
  }
  await meta.createRelocation(rec)
  return rec
}
