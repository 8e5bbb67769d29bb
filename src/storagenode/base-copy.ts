// Copy-on-write of a clone's block from a base (parent) disk held by another node: pull the
// newest base version <= the snapshot epoch into this node's clone block. Local bases are copied
// by BlockStore.copyBase without the network. All-zero chunks are skipped: thin stays thin.
// The copy is staged (BlockStore.stageVersion): a crash or a failed read part-way leaves no
// version behind, so the clone's block still reads through to the base — never a partial copy.
import { UkaiError } from '../errors'
import { allZero, PULL_CHUNK_BYTES } from './block-pull'
import type { BlockStore } from './block-store'
import { StorageClient } from './client'
import { CopyBaseRequest, CopyBaseResponse } from './wire'

export async function copyBaseFromPeer (store: Pick<BlockStore, 'hasVersions' | 'stageVersion'>, source: StorageClient, req: CopyBaseRequest): Promise<CopyBaseResponse> {
  if (store.hasVersions(req.diskUuid, req.block)) return { result: 'present', bytes: 0 }
  const versions = (await source.blockInfo({ diskUuid: req.baseUuid, block: req.block })).filter(v => v.epoch <= req.baseEpoch)
  if (versions.length === 0) return { result: 'absent', bytes: 0 }
  const base = versions.reduce((a, b) => (b.epoch > a.epoch ? b : a))
  const staged = await store.stageVersion(req.diskUuid, req.block, req.epoch, req.leaseEpoch)
  try {
    let bytes = 0
    for (let off = 0; off < base.sizeBytes; off += PULL_CHUNK_BYTES) {
      const length = Math.min(PULL_CHUNK_BYTES, base.sizeBytes - off)
      const data = await source.read({ diskUuid: req.baseUuid, block: req.block, epoch: base.epoch, offset: off, length })
      if (data.length !== length) throw UkaiError.io(`copy of base block ${req.block}: source returned ${data.length} of ${length} bytes`)
      if (allZero(data)) continue
      await staged.write(off, data)
      bytes += length
    }
    // All zeros: nothing to install, the block reads through to the base's zeros.
    if (bytes === 0) { await staged.abort(); return { result: 'copied', bytes: 0 } }
    // Durable (file and directory entry) before the writer counts on it. 'present': a write of
    // the clone raced us (its writer is the one asking) and is never overwritten.
    const result = await staged.commit()
    return { result, bytes: result === 'copied' ? bytes : 0 }
  } finally {
    await staged.abort()  // a no-op after commit
  }
}
