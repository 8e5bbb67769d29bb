// Node-to-node copy: pull every version of a block from a source node into the local store,
// oldest first, so this node ends with exactly the source's versions. Each version starts empty
// here (a discard of the whole version: deleted, or an empty version over an older one, never a
// clone of it), so zeros the source has — holes a TRIM punched, a tail it truncated, a version a
// TRIM emptied — are zeros here too, and all-zero chunks are skipped: thin blocks stay thin.
// The answer comes only once the block's files and directory entries are durable (fsync).
// Reads are pipelined (PULL_WINDOW_CHUNKS in flight): through bench/copy-throughput.ts's proxy
// (20 ms, 200 Mbit/s) 1 MiB reads moved 0.35-0.5 of the link one at a time, 0.77-0.93 four at a
// time; a whole pull (PullBlock without writes) 0.93 of it, with TLS, at load ~11.
import { UkaiError, safetyCatch } from '../errors'
import { BLOCK_SIZE_MAX_BYTES } from '../lib/limits'
import type { BlockStore } from './block-store'
import { StorageClient } from './client'
import { PAGE_BYTES } from './version-files'

export const PULL_CHUNK_BYTES = 1024 * 1024
// Chunk reads in flight per pull. One at a time, a pull over a 20 ms link (40 ms round trip) at
// 200 Mbit/s moved 1 MiB per 85 ms (12 MB/s, half the link: bench/relocate.ts's probe). The
// bandwidth-delay product there is 1 MB; 4 MiB in flight covers it 4×, so one pull alone fills
// such a link, or a 1 Gbit/s one with 30 ms round trips, and the target holds at most 4 MiB per pull.
export const PULL_WINDOW_CHUNKS = 4

const ZERO_PAGE = Buffer.alloc(PAGE_BYTES)

// A byte loop in JS took 7-30 ms per MiB of zeros here; a page compare (memcmp) ~0.6-3 ms.
export function allZero (b: Buffer): boolean {
  for (let pos = 0; pos < b.length; pos += PAGE_BYTES) {
    const end = Math.min(pos + PAGE_BYTES, b.length)
    if (!ZERO_PAGE.subarray(0, end - pos).equals(b.subarray(pos, end))) return false
  }
  return true
}

// The runs of pages of `data` that are not all zeros: only those are written.
function dataRuns (data: Buffer): Array<{ start: number, end: number }> {
  const runs: Array<{ start: number, end: number }> = []
  for (let pos = 0; pos < data.length; pos += PAGE_BYTES) {
    const end = Math.min(pos + PAGE_BYTES, data.length)
    if (allZero(data.subarray(pos, end))) continue
    const last = runs[runs.length - 1]
    if (last !== undefined && last.end === pos) last.end = end
    else runs.push({ start: pos, end })
  }
  return runs
}

// `cancelled()` true: the caller gave up on this pull; it stops before its next write (a retry
// of the block may follow, copy-handlers.ts), answering UNAVAILABLE to nobody.
export async function pullBlock (store: Pick<BlockStore, 'discard' | 'write' | 'syncBlock'>, source: StorageClient, req: { diskUuid: string, block: number, leaseEpoch: number, probe?: boolean }, cancelled: () => boolean = () => false): Promise<number> {
  const stopIfCancelled = (): void => { if (cancelled()) throw UkaiError.unavailable(`pull of block ${req.block}: its caller gave up (deadline or cancel); stopped`) }
  stopIfCancelled()
  const versions = (await source.blockInfo({ diskUuid: req.diskUuid, block: req.block })).sort((a, b) => a.epoch - b.epoch)
  const chunks: Array<{ epoch: number, offset: number, length: number, first: boolean }> = []
  for (const v of versions) {
    chunks.push({ epoch: v.epoch, offset: 0, length: Math.min(PULL_CHUNK_BYTES, v.sizeBytes), first: true })
    for (let off = PULL_CHUNK_BYTES; off < v.sizeBytes; off += PULL_CHUNK_BYTES) chunks.push({ epoch: v.epoch, offset: off, length: Math.min(PULL_CHUNK_BYTES, v.sizeBytes - off), first: false })
  }
  const read = (i: number): Promise<Buffer> => chunks[i].length === 0
    ? Promise.resolve(Buffer.alloc(0))
    : source.read({ diskUuid: req.diskUuid, block: req.block, epoch: chunks[i].epoch, offset: chunks[i].offset, length: chunks[i].length })
  // PULL_WINDOW_CHUNKS reads in flight: over a far link the next chunks travel while this one is
  // written, and the pipe stays full across the round trip.
  const ahead: Array<Promise<Buffer>> = []
  let issued = 0
  const refill = (): void => {
    while (issued < chunks.length && ahead.length < PULL_WINDOW_CHUNKS) {
      const p = read(issued++)
      p.catch(safetyCatch) // awaited in order below; a later one failing first must not go unhandled
      ahead.push(p)
    }
  }
  let written = 0
  refill()
  for (let i = 0; i < chunks.length; i++) {
    const data = await (ahead.shift() as Promise<Buffer>)
    refill()
    const c = chunks[i]
    if (data.length !== c.length) throw UkaiError.io(`pull of block ${req.block}: source returned ${data.length} of ${c.length} bytes`)
    if (req.probe === true) { written += data.length; continue }
    stopIfCancelled()
    if (c.first) await store.discard(req.diskUuid, req.block, c.epoch, 0, BLOCK_SIZE_MAX_BYTES, req.leaseEpoch)
    for (const r of dataRuns(data)) {
      await store.write(req.diskUuid, req.block, c.epoch, c.offset + r.start, data.subarray(r.start, r.end), req.leaseEpoch)
      written += r.end - r.start
    }
  }
  // Durable before we answer: the executor marks this replica in sync on the answer, and a
  // flip may then drop the replicas it was copied from.
  if (req.probe !== true) { stopIfCancelled(); await store.syncBlock(req.diskUuid, req.block) }
  return written
}
