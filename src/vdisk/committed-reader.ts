// Reading a committed snapshot of a disk straight from the storage nodes: which blocks have
// versions (asked of the nodes, one ListBlocks per node), and the bytes of a block at the
// snapshot (per block, the newest version with epoch <= the snapshot's; for a clone, the
// parent's committed version where the clone never wrote the block).
//
// Export and import use it through the CommittedView interface only, so the snapshot reader of
// the mount can stand in for it.
import { UkaiError } from '../errors'
import { PlacementSegment, readableReplicas } from '../meta/placement'
import { DiskRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { NodePool } from './node-pool'

// Parents deeper than this are a loop in the metadata, not a real chain of clones.
const PARENT_DEPTH_MAX = 64
const READ_ATTEMPTS_PER_REPLICA = 2

export interface CommittedView {
  readonly sizeBytes: number
  readonly blockSizeBytes: number
  // Blocks that may hold data at this snapshot (a version here, or in a parent), ascending.
  writtenBlocks (): number[]
  // `length` bytes of `block` at `offsetInBlock` (at most 4 MiB), as the snapshot holds them.
  read (block: number, offsetInBlock: number, length: number): Promise<Buffer>
}

// Per block, the ascending epochs of its versions, as the in-sync replicas report them.
export type VersionIndex = Map<number, number[]>

// The newest epoch in `epochs` (ascending) that is <= `epoch`, or undefined.
export function newestAtMost (epochs: readonly number[] | undefined, epoch: number): number | undefined {
  if (epochs === undefined) return undefined
  let found: number | undefined
  for (const e of epochs) { if (e <= epoch) found = e; else break }
  return found
}

// Asks every node named in the map for the disk's blocks once. A block's epochs are the union
// over its in-sync replicas (any one of them holds every version); a block none of whose in-sync
// replicas answered makes the whole index fail, since its versions would be unknown.
export async function loadVersionIndex (pool: NodePool, disk: DiskRecord, segments: PlacementSegment[]): Promise<VersionIndex> {
  const nodes = new Set<string>()
  for (const seg of segments) for (const run of seg.runs()) for (const r of run.replicas) nodes.add(r.node)
  const answers = new Map<string, Map<number, number[]>>()
  const failures: string[] = []
  await Promise.all([...nodes].map(async (node) => {
    try {
      const blocks = await pool.client(node).listBlocks({ diskUuid: disk.uuid })
      answers.set(node, new Map(blocks.map(b => [b.block, b.epochs])))
    } catch (err) {
      failures.push(`${node}: ${(err as Error).message}`)
    }
  }))
  const index: VersionIndex = new Map()
  for (const seg of segments) {
    let block = seg.firstBlock
    for (const run of seg.runs()) {
      const sources = readableReplicas(run.replicas).map(r => answers.get(r.node)).filter((a): a is Map<number, number[]> => a !== undefined)
      if (sources.length === 0) {
        throw UkaiError.unavailable(`disk '${disk.name}': blocks ${block}-${block + run.length - 1} have no in-sync replica that answered (${failures.join('; ') || 'none in sync'})`)
      }
      for (const src of sources) {
        // Walk the node's answer (small) rather than every block of the run (possibly huge).
        for (const [b, epochs] of src) {
          if (b < block || b >= block + run.length) continue
          const known = index.get(b)
          index.set(b, known === undefined ? [...epochs] : [...new Set([...known, ...epochs])].sort((x, y) => x - y))
        }
      }
      block += run.length
    }
  }
  return index
}

// Blocks with a version in (fromEpoch, toEpoch]: exactly the blocks whose content may differ
// between the two snapshots (each snapshot reads the newest version at or below its epoch).
export function changedBetween (index: VersionIndex, fromEpoch: number, toEpoch: number): number[] {
  const out: number[] = []
  for (const [block, epochs] of index) if (epochs.some(e => e > fromEpoch && e <= toEpoch)) out.push(block)
  return out.sort((a, b) => a - b)
}

// Blocks with any version newer than `epoch` (writes since that snapshot).
export function writtenAfter (index: VersionIndex, epoch: number): number[] {
  const out: number[] = []
  for (const [block, epochs] of index) if (epochs[epochs.length - 1] > epoch) out.push(block)
  return out.sort((a, b) => a - b)
}

export class SnapshotView implements CommittedView {
  readonly disk: DiskRecord
  readonly epoch: number
  readonly index: VersionIndex
  private readonly pool: NodePool
  private readonly segments: PlacementSegment[]
  private readonly parent: SnapshotView | null

  private constructor (pool: NodePool, disk: DiskRecord, epoch: number, segments: PlacementSegment[], index: VersionIndex, parent: SnapshotView | null) {
    this.pool = pool
    this.disk = disk
    this.epoch = epoch
    this.segments = segments
    this.index = index
    this.parent = parent
  }

  // The view of `disk` at committed `epoch`, with its parents' views for a clone.
  static async open (meta: MetaStore, pool: NodePool, disk: DiskRecord, epoch: number, depth = 0): Promise<SnapshotView> {
    if (depth > PARENT_DEPTH_MAX) throw UkaiError.internal(`disk '${disk.name}': more than ${PARENT_DEPTH_MAX} parents (a loop?)`)
    const segments = await meta.loadPlacement(disk)
    const index = await loadVersionIndex(pool, disk, segments)
    let parent: SnapshotView | null = null
    if (disk.parent !== null) {
      const parentDisk = await meta.getDisk(disk.parent.disk)
      const parentSnap = await meta.getSnapshot(disk.parent.disk, disk.parent.snapshot)
      if (parentDisk.blockSizeBytes !== disk.blockSizeBytes) throw UkaiError.internal(`clone '${disk.name}' has ${disk.blockSizeBytes}-byte blocks, its parent '${parentDisk.name}' ${parentDisk.blockSizeBytes}`)
      parent = await SnapshotView.open(meta, pool, parentDisk, parentSnap.epoch, depth + 1)
    }
    return new SnapshotView(pool, disk, epoch, segments, index, parent)
  }

  get sizeBytes (): number { return this.disk.sizeBytes }
  get blockSizeBytes (): number { return this.disk.blockSizeBytes }

  writtenBlocks (): number[] {
    const blocks = new Set<number>()
    for (const [b, epochs] of this.index) if (epochs[0] <= this.epoch) blocks.add(b)
    if (this.parent !== null) {
      // The parent's blocks at the clone's block size; a clone keeps its parent's block size.
      const limit = Math.ceil(this.sizeBytes / this.blockSizeBytes)
      for (const b of this.parent.writtenBlocks()) if (b < limit) blocks.add(b)
    }
    return [...blocks].sort((a, b) => a - b)
  }

  // The epoch of the version a read of `block` returns here, or undefined (not in this disk).
  versionOf (block: number): number | undefined {
    return newestAtMost(this.index.get(block), this.epoch)
  }

  async read (block: number, offsetInBlock: number, length: number): Promise<Buffer> {
    const version = this.versionOf(block)
    if (version === undefined) {
      if (this.parent !== null && block * this.blockSizeBytes < this.parent.sizeBytes) return await this.parent.read(block, offsetInBlock, length)
      return Buffer.alloc(length)
    }
    const seg = this.segments[Math.floor(block / this.disk.segmentBlocks)]
    const replicas = readableReplicas(seg.replicas(block)).sort((a, b) => this.pool.distance(a.node) - this.pool.distance(b.node))
    const errors: string[] = []
    for (const r of replicas) {
      for (let attempt = 0; attempt < READ_ATTEMPTS_PER_REPLICA; attempt++) {
        try {
          // Asking for exactly the version's epoch: the answer is that version, whatever else exists.
          const data = await this.pool.readClient(r.node).read({ diskUuid: this.disk.uuid, block, epoch: version, offset: offsetInBlock, length })
          if (data.length !== length) throw UkaiError.io(`returned ${data.length} bytes, ${length} asked`)
          return data
        } catch (err) {
          errors.push(`${r.node}: ${(err as Error).message}`)
        }
      }
    }
    throw UkaiError.io(`block ${block} of ${this.disk.name} at epoch ${this.epoch}: no in-sync replica could be read (${errors.join('; ') || 'none in sync'})`)
  }
}
