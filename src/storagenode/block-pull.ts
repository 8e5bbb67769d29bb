// Node-to-node copy: pull every version of a block from a source node into the local store,
// oldest first, so this node ends with exactly the source's versions (newer versions are written
// over their copy-on-write clones). All-zero chunks of the oldest version are skipped: thin
// blocks stay thin.
import { UkaiError } from '../errors'
import { BlockStore } from './block-store'
import { StorageClient } from './client'

export const PULL_CHUNK_BYTES = 1024 * 1024

export function allZero (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}

export async function pullBlock (store: BlockStore, source: StorageClient, req: { diskUuid: string, block: number, leaseEpoch: number, probe?: boolean }): Promise<number> {
  const versions = (await source.blockInfo({ diskUuid: req.diskUuid, block: req.block })).sort((a, b) => a.epoch - b.epoch)
  const chunks: Array<{ epoch: number, offset: number, length: number, oldest: boolean }> = []
  versions.forEach((v, i) => {
    for (let off = 0; off < v.sizeBytes; off += PULL_CHUNK_BYTES) chunks.push({ epoch: v.epoch, offset: off, length: Math.min(PULL_CHUNK_BYTES, v.sizeBytes - off), oldest: i === 0 })
  })
  const read = (i: number): Promise<Buffer> | null => i < chunks.length
    ? source.read({ diskUuid: req.diskUuid, block: req.block, epoch: chunks[i].epoch, offset: chunks[i].offset, length: chunks[i].length })
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
      if (c.oldest && allZero(data)) continue
      await store.write(req.diskUuid, req.block, c.epoch, c.offset, data, req.leaseEpoch)
      written += c.length
    }
  } catch (err) {
    next?.catch(() => {}) // the read ahead must not end as an unhandled rejection
    throw err
  }
  return written
}
