// Copy-on-write of a clone's block from a base (parent) disk held by another node: pull the
// newest base version <= the snapshot epoch into this node's clone block. Local bases are copied
// by BlockStore.copyBase without the network. All-zero chunks are skipped: thin stays thin.
import { UkaiError } from '../errors'
import { allZero, PULL_CHUNK_BYTES } from './block-pull'
import { BlockStore } from './block-store'
import { StorageClient } from './client'
import { CopyBaseRequest, CopyBaseResponse } from './wire'

export async function copyBaseFromPeer (store: BlockStore, source: StorageClient, req: CopyBaseRequest): Promise<CopyBaseResponse> {
  if (store.hasVersions(req.diskUuid, req.block)) return { result: 'present', bytes: 0 }
  const versions = (await source.blockInfo({ diskUuid: req.baseUuid, block: req.block })).filter(v => v.epoch <= req.baseEpoch)
  if (versions.length === 0) return { result: 'absent', bytes: 0 }
  const base = versions.reduce((a, b) => (b.epoch > a.epoch ? b : a))
  let bytes = 0
  for (let off = 0; off < base.sizeBytes; off += PULL_CHUNK_BYTES) {
    const length = Math.min(PULL_CHUNK_BYTES, base.sizeBytes - off)
    const data = await source.read({ diskUuid: req.baseUuid, block: req.block, epoch: base.epoch, offset: off, length })
    if (data.length !== length) throw UkaiError.io(`copy of base block ${req.block}: source returned ${data.length} of ${length} bytes`)
    if (allZero(data)) continue
    // A write of the clone raced us here (its writer is the one asking): never overwrite it.
    if (bytes === 0 && store.hasVersions(req.diskUuid, req.block)) return { result: 'present', bytes: 0 }
    await store.write(req.diskUuid, req.block, req.epoch, off, data, req.leaseEpoch)
    bytes += length
  }
  // Durable before the writer counts on it: after a crash the clone's block must read as the
  // base did, never as a version file with part of the base missing.
  if (bytes > 0) await store.syncBlock(req.diskUuid, req.block)
  return { result: 'copied', bytes }
}
