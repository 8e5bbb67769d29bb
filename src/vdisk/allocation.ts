// Which parts of a disk hold data, for NBD block status (`base:allocation`) and lseek's
// SEEK_DATA/SEEK_HOLE on the FUSE file, so `qemu-img map`, `convert` and `cp --sparse` skip
// holes. The engine knows allocation per disk block only: a block with no version on any storage
// node (never written, or discarded whole) reads as zeros; any block with a version — even one
// partly punched — is reported as data. Granularity is therefore the
// disk's block size (default 4 MiB). The nodes' `ListBlocks` answers it; a hole is reported only
// when every node in the placement map answered and none has a version of the block (a node that
// does not answer makes the whole answer "data", which the protocol allows: status 0 is always
// safe). Clones count their ancestors' written blocks as data.
import { MetaStore } from '../meta/store'
import { DiskRecord } from '../meta/schema'
import { NodePool } from './node-pool'
import { ParentChain } from './parent-chain'
import { safetyCatch } from '../errors'

export interface AllocationRun { offset: number, lengthBytes: number, hole: boolean }

export interface AllocationSource {
  readonly sizeBytes: number    // the file's size now (a disk's head may be resized)
  // Runs covering at least [offset, offset+length) (the last may go further), or null when the
  // allocation cannot be known right now (report data).
  runs (offset: number, length: number): Promise<AllocationRun[] | null>
}

export type SeekWhence = 'data' | 'hole'

// lseek(2)'s SEEK_DATA / SEEK_HOLE: the first data (or hole) offset at or after `offset`, the end
// of the file counting as a hole; null where lseek fails with ENXIO (`offset` at or past the end,
// or SEEK_DATA with no data after it). An allocation that cannot be known now is all data, as on a
// file system without holes.
export async function seekAllocation (source: AllocationSource, offset: number, whence: SeekWhence): Promise<number | null> {
  const size = source.sizeBytes
  if (!(offset >= 0 && offset < size)) return null
  const runs = await source.runs(offset, size - offset)
  if (runs === null) return whence === 'data' ? offset : size
  for (const r of runs) {
    if (r.offset + r.lengthBytes <= offset) continue
    if (r.hole === (whence === 'hole')) return Math.max(r.offset, offset)
  }
  return whence === 'data' ? null : size
}

export interface WrittenBlocksQuery {
  pool: NodePool
  uuid: string
  nodes: Iterable<string>
  epochMax: number            // versions above this epoch do not count (a snapshot's)
}

// Blocks any of `nodes` holds a version of (epoch ≤ epochMax); null if a node did not answer.
export async function writtenBlocks (q: WrittenBlocksQuery): Promise<Set<number> | null> {
  const out = new Set<number>()
  let complete = true
  await Promise.all([...q.nodes].map(async (node) => {
    try {
      for (const b of await q.pool.readClient(node).listBlocks({ diskUuid: q.uuid })) {
        if (b.epochs.some(e => e <= q.epochMax)) out.add(b.block)
      }
    } catch (err) {
      safetyCatch(err)
      complete = false
    }
  }))
  return complete ? out : null
}

// Runs of equal allocation from `offset` on, each a whole number of blocks (the first starts at
// `offset`, the last ends at the end of its run or of the disk).
export function runsFromBlocks (written: Set<number>, blockSizeBytes: number, sizeBytes: number, offset: number, length: number): AllocationRun[] {
  const runs: AllocationRun[] = []
  const end = Math.min(sizeBytes, offset + length)
  let at = offset
  while (at < sizeBytes && (runs.length === 0 || at < end)) {
    const hole = !written.has(Math.floor(at / blockSizeBytes))
    let next = (Math.floor(at / blockSizeBytes) + 1) * blockSizeBytes
    while (next < sizeBytes && !written.has(Math.floor(next / blockSizeBytes)) === hole) next += blockSizeBytes
    next = Math.min(next, sizeBytes)
    runs.push({ offset: at, lengthBytes: next - at, hole })
    at = next
  }
  return runs
}

// The head of an open disk: asked of the nodes at every request (writes move it).
export interface HeadDiskView {
  readonly record: DiskRecord
  readonly sizeBytes: number
  readonly isClone: boolean
  readonly map: { nodesInMap: () => Set<string> }  // the disk's placement map (DiskMap)
  readonly mutations: number  // block writes and discards ended on this host (VirtualDisk)
  parentBlocks: () => Promise<number[]>
}

// How long a head's written blocks are reused while this host changed none of them. lseek asks
// one boundary at a time: `qemu-img map` of a 4 GiB disk of 4096 extents made 8192 ListBlocks
// rounds (47 s) without it, 3.5 s with it. A change on this host drops the copy at once; one made by another host
// (which then holds the lease) is seen within this time.
const HEAD_WRITTEN_TTL_MS = 1000

export class HeadAllocation implements AllocationSource {
  // A clone's ancestors are committed versions: what they wrote never changes.
  private parents: Promise<Set<number>> | null = null
  private cached: { written: Set<number>, mutations: number, atMs: number } | null = null

  constructor (private readonly pool: NodePool, private readonly disk: HeadDiskView) {}

  get sizeBytes (): number { return this.disk.sizeBytes }

  async runs (offset: number, length: number): Promise<AllocationRun[] | null> {
    const written = await this.written()
    if (written === null) return null
    return runsFromBlocks(written, this.disk.record.blockSizeBytes, this.disk.sizeBytes, offset, length)
  }

  private async written (): Promise<Set<number> | null> {
    const c = this.cached
    if (c !== null && c.mutations === this.disk.mutations && Date.now() - c.atMs < HEAD_WRITTEN_TTL_MS) return c.written
    const mutations = this.disk.mutations  // read before asking: a change ending meanwhile drops the answer
    const atMs = Date.now()
    const rec = this.disk.record
    const written = await writtenBlocks({ pool: this.pool, uuid: rec.uuid, nodes: this.disk.map.nodesInMap(), epochMax: Number.MAX_SAFE_INTEGER })
    if (written === null) return null
    if (this.disk.isClone) {
      this.parents ??= this.disk.parentBlocks().then(bs => new Set(bs))
      for (const b of await this.parents) written.add(b)
    }
    this.cached = { written, mutations, atMs }
    return written
  }
}

// A committed snapshot never changes: its written blocks are asked once (until that succeeds).
export class SnapshotAllocation implements AllocationSource {
  private known: { written: Set<number>, blockSizeBytes: number } | null = null

  constructor (private readonly meta: MetaStore, private readonly pool: NodePool, private readonly ioRetryMs: number, private readonly disk: string, private readonly epoch: number, readonly sizeBytes: number) {}

  async runs (offset: number, length: number): Promise<AllocationRun[] | null> {
    this.known ??= await this.load()
    if (this.known === null) return null
    return runsFromBlocks(this.known.written, this.known.blockSizeBytes, this.sizeBytes, offset, length)
  }

  private async load (): Promise<{ written: Set<number>, blockSizeBytes: number } | null> {
    const rec = await this.meta.getDisk(this.disk)
    const nodes = new Set<string>()
    for (const seg of await this.meta.loadPlacement(rec)) for (const run of seg.runs()) for (const r of run.replicas) nodes.add(r.node)
    const written = await writtenBlocks({ pool: this.pool, uuid: rec.uuid, nodes, epochMax: this.epoch })
    if (written === null) return null
    const chain = await ParentChain.open(this.meta, this.pool, rec, this.ioRetryMs)
    if (chain !== null) {
      try {
        for (const b of await chain.writtenBlocks(this.meta)) written.add(b)
      } finally {
        await chain.close()
      }
    }
    return { written, blockSizeBytes: rec.blockSizeBytes }
  }
}
