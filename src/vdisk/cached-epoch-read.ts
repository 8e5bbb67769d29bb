// A read of a committed epoch through the host's CommittedCache: find which version the read
// returns (newest <= the epoch, asked once of a replica with BlockInfo and remembered), then serve
// each 1 MiB cache line of that version from the cache, or fetch it — at exactly that version's
// epoch, so the bytes stored are the key's — and keep it.
import { CACHE_CHUNK_BYTES, CommittedCache } from './committed-cache'

// What a reader of one committed epoch offers (EpochReader).
export interface CommittedSource {
  readonly record: { uuid: string, blockSizeBytes: number }
  readonly epoch: number
  readonly sizeBytes: number
  versionsOf (block: number): Promise<number[]>
  readFromNodes (block: number, epoch: number, offsetInBlock: number, length: number, absentAsNull: boolean): Promise<Buffer | null>
}

// The newest epoch in `epochs` (ascending) that is <= `epoch`, or null.
export function newestAtMost (epochs: readonly number[], epoch: number): number | null {
  let found: number | null = null
  for (const e of epochs) { if (e <= epoch) found = e; else break }
  return found
}

export async function cachedCommittedRead (cache: CommittedCache, src: CommittedSource, block: number, offsetInBlock: number, length: number, absentAsNull: boolean): Promise<Buffer | null> {
  const uuid = src.record.uuid
  let version = cache.versionAt(uuid, block, src.epoch)
  if (version === undefined) {
    version = newestAtMost(await src.versionsOf(block), src.epoch)
    cache.rememberVersion(uuid, block, src.epoch, version)
  }
  // No version at or below the epoch: zeros, or (a clone level) the parent's bytes.
  if (version === null) return absentAsNull ? null : Buffer.alloc(length)
  const blockBytes = Math.min(src.record.blockSizeBytes, src.sizeBytes - block * src.record.blockSizeBytes)
  const first = Math.floor(offsetInBlock / CACHE_CHUNK_BYTES)
  const last = Math.floor((offsetInBlock + length - 1) / CACHE_CHUNK_BYTES)
  const lines = await Promise.all(Array.from({ length: last - first + 1 }, async (_, i) => {
    const chunk = first + i
    const hit = await cache.get(uuid, block, version as number, chunk)
    if (hit !== null) return hit
    const start = chunk * CACHE_CHUNK_BYTES
    const data = await src.readFromNodes(block, version as number, start, Math.min(CACHE_CHUNK_BYTES, blockBytes - start), false) as Buffer
    await cache.put(uuid, block, version as number, chunk, data)
    return data
  }))
  const whole = lines.length === 1 ? lines[0] : Buffer.concat(lines)
  const from = offsetInBlock - first * CACHE_CHUNK_BYTES
  if (whole.length >= from + length) return whole.subarray(from, from + length)
  // Past the end of the committed block (a grown clone reading its parent's short last block): zeros.
  const out = Buffer.alloc(length)
  whole.copy(out, 0, Math.min(from, whole.length))
  return out
}
