// Node-to-node copy: pull every version of a block from a source node into the local store,
// oldest first, so this node ends with exactly the source's versions. Each version starts empty
// here (a discard of the whole version: deleted, or an empty version over an older one, never a
// clone of it), so zeros the source has — holes a TRIM punched, a tail it truncated, a version a
// TRIM emptied — are zeros here too, and all-zero chunks are skipped: thin blocks stay thin.
// The answer comes only once the block's files and directory entries are durable (fsync).
import { UkaiError, safetyCatch } from '../errors'
import { BLOCK_SIZE_MAX_BYTES } from '../lib/limits'
import type { BlockStore } from './block-store'
import { StorageClient } from './client'
import { PAGE_BYTES } from './version-files'

export const PULL_CHUNK_BYTES = 1024 * 1024

export function allZero (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
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

export async function pullBlock (store: Pick<BlockStore, 'discard' | 'write' | 'syncBlock'>, source: StorageClient, req: { diskUuid: string, block: number, leaseEpoch: number, probe?: boolean }): Promise<number> {
  const versions = (await source.blockInfo({ diskUuid: req.diskUuid, block: req.block })).sort((a, b) => a.epoch - b.epoch)
  const chunks: Array<{ epoch: number, offset: number, length: number, first: boolean }> = []
  for (const v of versions) {
    chunks.push({ epoch: v.epoch, offset: 0, length: Math.min(PULL_CHUNK_BYTES, v.sizeBytes), first: true })
    for (let off = PULL_CHUNK_BYTES; off < v.sizeBytes; off += PULL_CHUNK_BYTES) chunks.push({ epoch: v.epoch, offset: off, length: Math.min(PULL_CHUNK_BYTES, v.sizeBytes - off), first: false })
  }
  const read = (i: number): Promise<Buffer> | null => i < chunks.length
    ? chunks[i].length === 0 ? Promise.resolve(Buffer.alloc(0)) : source.read({ diskUuid: req.diskUuid, block: req.block, epoch: chunks[i].epoch, offset: chunks[i].offset, length: chunks[i].length })
    : null
  // One read ahead: over a far link the next chunk travels while this one is written.
  let next = read(0)
  let written = 0
  try {
    for (let i = 0; i < chunks.length; i++) {
      const data = await (next as Promise<Buffer>)
      next = read(i + 1)
      const c = chunks[i]
      if (data.length !== c.length) throw UkaiError.io(`pull of block ${req.block}: source returned ${data.length} of ${c.length} bytes`)
      if (req.probe === true) { written += data.length; continue }
      if (c.first) await store.discard(req.diskUuid, req.block, c.epoch, 0, BLOCK_SIZE_MAX_BYTES, req.leaseEpoch)
      for (const r of dataRuns(data)) {
        await store.write(req.diskUuid, req.block, c.epoch, c.offset + r.start, data.subarray(r.start, r.end), req.leaseEpoch)
        written += r.end - r.start
      }
    }
  } catch (err) {
    next?.catch(safetyCatch) // the read ahead must not end as an unhandled rejection
    throw err
  }
  // Durable before we answer: the executor marks this replica in sync on the answer, and a
  // flip may then drop the replicas it was copied from.
  if (req.probe !== true) await store.syncBlock(req.diskUuid, req.block)
  return written
}
