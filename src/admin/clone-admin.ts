// Clones: a new disk whose parent is a snapshot; it shares the snapshot's blocks until it writes
// them (see parent-chain.ts). Flattening copies what a clone still reads from its parent, so the
// parent snapshot can go.
import { UkaiError } from '../errors'
import { SnapshotRef, validateDiskName, validateId } from '../meta/schema'
import { AdminContext, withDiskLease } from './admin-lease'
import { createDisk } from './disk-admin'
import { DiskRecord } from '../meta/schema'
import { forEachBounded } from '../lib/worker-pool'

const FLATTEN_CONCURRENCY = 4

export async function cloneDisk (ctx: AdminContext, from: SnapshotRef, name: string, opts: { site?: string } = {}): Promise<DiskRecord> {
  validateDiskName(name)
  if (opts.site !== undefined) validateId(opts.site, 'site')
  const meta = ctx.meta
  const snap = await meta.getSnapshot(from.disk, from.snapshot)
  const parent = await meta.getDisk(from.disk)
  // Same block size (block i of the clone is block i of the parent); by default on the parent's
  // nodes, so copy-on-write copies locally.
  return await createDisk(meta, {
    name,
    sizeBytes: snap.sizeBytes,
    blockSizeBytes: snap.blockSizeBytes,
    replicas: parent.replicas,
    ...(opts.site !== undefined ? { site: opts.site } : parent.placement.nodes !== undefined ? { nodes: parent.placement.nodes } : parent.placement.site !== undefined ? { site: parent.placement.site } : {}),
    tenant: parent.tenant,
    parent: { disk: from.disk, snapshot: from.snapshot }
  })
}

// Copies every block the clone still reads from its ancestors into the clone, then cuts the
// link (parent: null). Refused while the clone is open: its writer would fight us for the lease.
export async function flattenClone (ctx: AdminContext, name: string, onProgress?: (done: number, total: number) => void): Promise<void> {
  const meta = ctx.meta
  const opens = await meta.listOpens(name)
  if (opens.length > 0) throw UkaiError.busy(`clone '${name}' is open on ${opens.join(', ')}; close it before flattening`)
  await withDiskLease(ctx, name, async (disk) => {
    if (!disk.isClone) return
    const blocks = await disk.parentBlocks()
    let done = 0
    onProgress?.(0, blocks.length)
    await forEachBounded(blocks, FLATTEN_CONCURRENCY, async (block) => {
      await disk.materializeBlock(block)
      onProgress?.(++done, blocks.length)
    })
    const rec = await meta.getDisk(name)
    const { version, ...rest } = rec
    await meta.updateDisk({ ...rest, parent: null }, version, [], [])
  })
}
