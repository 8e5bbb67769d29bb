// What fallocate(2) means on a thin disk. Guest TRIM arrives here (QEMU's raw driver sends
// PUNCH_HOLE|KEEP_SIZE; test/vdisk-trim.test.ts). PUNCH_HOLE and ZERO_RANGE both discard: the
// range reads as zeros and its space is freed on every replica (a thin disk stays thin;
// ZERO_RANGE's promise to keep the range allocated is not kept, like any thin store). Mode 0
// reserves nothing (thin), so within the size it is a successful no-op; with either mode a range
// past the end without KEEP_SIZE grows the disk, as on a local file. COLLAPSE/INSERT/UNSHARE_RANGE
// are not supported (EOPNOTSUPP).
//
// Split from agent.ts: the mode bits and their meaning in one place; the agent supplies the disk
// and how it grows.
import { UkaiError } from '../errors'
import { VirtualDisk } from '../vdisk/virtual-disk'

// fallocate(2) mode bits (linux/falloc.h).
const FALLOC_FL_KEEP_SIZE = 0x01
const FALLOC_FL_PUNCH_HOLE = 0x02
const FALLOC_FL_ZERO_RANGE = 0x10

export async function fallocateDisk (disk: Pick<VirtualDisk, 'name' | 'sizeBytes' | 'discard'>, grow: (sizeBytes: number) => Promise<void>, mode: number, offset: number, length: number): Promise<void> {
  if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) {
    throw UkaiError.notSupported(`fallocate mode 0x${mode.toString(16)} on ${disk.name}: only punch-hole, zero-range and plain allocation are supported`)
  }
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
    throw UkaiError.badArgument(`fallocate on ${disk.name}: bad range ${offset}+${length}`)
  }
  const grows = (mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) === 0 && offset + length > disk.sizeBytes
  if (grows) await grow(offset + length)
  if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) await disk.discard(offset, length)
}
