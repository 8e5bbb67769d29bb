// What a disk really uses: the blocks an in-sync replica holds data for × the block size, asked of
// one live node with ListBlocks (no byte read). The one definition behind `st_blocks` on the mount
// (agent/disk-usage.ts caches it per disk), the USED column of `disk list` and `disk info`.
//
// Block granularity and one replica: a partly written block counts whole; snapshot versions are
// not counted (`disk info` shows them apart); the replica count multiplies the raw space, not this.
import { DiskRecord } from '../meta/schema'
import { MetaStore, NodeView } from '../meta/store'
import { BlockEpochs, StorageClient } from '../storagenode/client'

export type ListBlocks = (node: string) => Promise<BlockEpochs[]> | null

// Null when no in-sync replica's node is alive (nothing to ask): callers show "?" or the full size.
export async function usedBytes (meta: MetaStore, rec: DiskRecord, listBlocks: ListBlocks): Promise<number | null> {
  const seg = await meta.loadSegment(rec.name, 0)
  const inSync = [...new Set(seg.runs().flatMap(run => run.replicas.filter(r => r.state === 'in-sync').map(r => r.node)))]
  for (const node of inSync) {
    const asked = listBlocks(node)
    if (asked === null) continue
    const blocks = await asked
    return Math.min(blocks.length * rec.blockSizeBytes, rec.sizeBytes)
  }
  return null
}

// For the CLI: a short-lived client per node asked; a node that fails to answer gives null.
export async function usedBytesOnce (meta: MetaStore, rec: DiskRecord, nodes: NodeView[]): Promise<number | null> {
  try {
    return await usedBytes(meta, rec, (id) => {
      const view = nodes.find(n => n.id === id)
      if (view?.alive == null) return null
      const client = new StorageClient({ nodeId: id, address: view.alive.address })
      return client.listBlocks({ diskUuid: rec.uuid }).finally(() => { void client.close() })
    })
  } catch {
    return null
  }
}
