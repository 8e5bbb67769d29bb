// Which blocks of a disk have versions at which epochs, asked of the storage nodes (one
// ListBlocks per node): what changed between two snapshots (a version in (from, to]), what a
// snapshot holds, and whether the head was written since a snapshot — no block is read for it.
// The bytes themselves are read through SnapshotImage (the mount's snapshot reader).
import { UkaiError } from '../errors'
import { PlacementSegment, readableReplicas } from '../meta/placement'
import { DiskRecord } from '../meta/schema'
import { NodePool } from '../vdisk/node-pool'

// Per block, the ascending epochs of its versions, as the in-sync replicas report them.
export type VersionIndex = Map<number, number[]>

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

// Blocks with a version at or below `epoch`.
export function writtenAtOrBefore (index: VersionIndex, epoch: number): number[] {
  const out: number[] = []
  for (const [block, epochs] of index) if (epochs[0] <= epoch) out.push(block)
  return out.sort((a, b) => a - b)
}
