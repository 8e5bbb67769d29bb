// Node-to-node copy: pull every version of a block from a source node into the local store,
// oldest first, so this node ends with exactly the source's versions (newer versions are written
// over their copy-on-write clones). All-zero chunks of the oldest version are skipped: thin
// blocks stay thin.
import { UkaiError } from '../errors'
import { BlockStore } from './block-store'
import { StorageClient } from './client'

export const PULL_CHUNK_BYTES = 1024 * 1024

function allZero (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}

export async function pullBlock (store: BlockStore, source: StorageClient, req: { diskUuid: string, block: number, leaseEpoch: number }): Promise<number> {
  const versions = (await source.blockInfo({ diskUuid: req.diskUuid, block: req.block })).sort((a, b) => a.epoch - b.epoch)
  let written = 0
  for (let v = 0; v < versions.length; v++) {
    const { epoch, sizeBytes } = versions[v]
    for (let off = 0; off < sizeBytes; off += PULL_CHUNK_BYTES) {
      const length = Math.min(PULL_CHUNK_BYTES, sizeBytes - off)
      const data = await source.read({ diskUuid: req.diskUuid, block: req.block, epoch, offset: off, length })
      if (data.length !== length) throw UkaiError.io(`pull of block ${req.block}: source returned ${data.length} of ${length} bytes`)
      if (v === 0 && allZero(data)) continue
      await store.write(req.diskUuid, req.block, epoch, off, data, req.leaseEpoch)
      written += length
    }
  }
  return written
}
