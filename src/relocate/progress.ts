// What a relocation record says about its progress: the one place that turns a record into a
// percentage, bytes done of bytes to do, a rate and an ETA, for every display (`relocate
// --wait`, `relocate status`, `disk repair`, `ukai top`), so they never disagree.
//
// - Percent counts blocks (the unit of work: a block is copied to all its targets at once),
//   against the blocks the executor found it has to copy (it re-bases the plan when it knows:
//   executor.ts). It stays below 100 until the record says `done`, and is 100 then.
// - Bytes: the bytes really copied (every version of a block moves, so a disk with snapshots
//   copies more than its written blocks × block size) of the planned bytes, never less than
//   what was copied; once done both are the bytes copied.
// - Rate: the average since the relocation started (bytes copied / time to the last progress
//   update), the same figure on every screen whenever it is looked at.
// - Pace: while a copy yields to the guests (copy-pace.ts), what it is slowed to and why.
// - ETA: only while the relocation runs (copying or flipping); a paused, cancelled or finished
//   one has none.
import { RelocationRecord } from '../meta/schema'
import { formatRate } from '../units'

export interface RelocationProgress {
  percent: number               // 0–100, whole
  fraction: number              // 0–1, for a bar
  doneBytes: number
  totalBytes: number
  rateBytesPerSec: number       // 0: no rate yet
  etaSec: number | null         // null: not running, or no rate yet
}

type ProgressFields = Pick<RelocationRecord, 'state' | 'plan' | 'progress' | 'createdAtMs'>

export function relocationProgress (r: ProgressFields): RelocationProgress {
  const done = r.state === 'done'
  const doneBytes = r.progress.bytes
  const totalBytes = done ? doneBytes : Math.max(r.plan.bytes, doneBytes)
  const fraction = done ? 1
    : r.plan.writtenBlocks > 0 ? Math.min(0.99, r.progress.blocks / r.plan.writtenBlocks)
      : totalBytes > 0 ? Math.min(0.99, doneBytes / totalBytes) : 0
  const secs = (r.progress.updatedAtMs - r.createdAtMs) / 1000
  const rateBytesPerSec = secs > 0 ? doneBytes / secs : 0
  const running = r.state === 'copying' || r.state === 'flipping'
  const etaSec = !running || rateBytesPerSec <= 0 ? null : Math.max(0, (totalBytes - doneBytes) / rateBytesPerSec)
  return { percent: Math.floor(fraction * 100), fraction, doneBytes, totalBytes, rateBytesPerSec, etaSec }
}

// "slowed to 1.05 MB/s: node b1 write p99 38 ms (idle 2 ms, seen from hv1)"; '' while the copy
// runs at its rate.
export function paceText (rec: Pick<RelocationRecord, 'state' | 'pace'>): string {
  if (rec.pace === undefined || rec.state !== 'copying') return ''
  return `slowed to ${formatRate(rec.pace.bytesPerSec)}: ${rec.pace.why}`
}
