// Copies every version of one block from a source replica to a target replica, oldest first,
// so the target ends with exactly the source's versions (a committed version is written once,
// then the newer ones on top of their copy-on-write clones). Chunks that are all zeros in the
// oldest version are skipped, which keeps thin blocks thin.
import { UkaiError } from '../errors'
import { StorageClient } from '../storagenode/client'

export const COPY_CHUNK_BYTES = 1024 * 1024

export interface CopyRequest {
  diskUuid: string
  block: number
  leaseEpoch: number
  source: StorageClient
  target: StorageClient
}

function allZero (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false
  return true
}

// Returns the bytes moved (what the rate limit counts).
export async function copyBlock (req: CopyRequest): Promise<number> {
  const versions = (await req.source.blockInfo({ diskUuid: req.diskUuid, block: req.block })).sort((a, b) => a.epoch - b.epoch)
  let moved = 0
  for (let v = 0; v < versions.length; v++) {
    const { epoch, sizeBytes } = versions[v]
    for (let off = 0; off < sizeBytes; off += COPY_CHUNK_BYTES) {
      const length = Math.min(COPY_CHUNK_BYTES, sizeBytes - off)
      const data = await req.source.read({ diskUuid: req.diskUuid, block: req.block, epoch, offset: off, length })
      if (data.length !== length) throw UkaiError.io(`copy of block ${req.block}: source returned ${data.length} of ${length} bytes`)
      if (v === 0 && allZero(data)) continue
      await req.target.write({ diskUuid: req.diskUuid, block: req.block, epoch, offset: off, data, leaseEpoch: req.leaseEpoch })
      moved += length
    }
  }
  return moved
}
