// The placement map of one disk: for every block, which storage nodes hold it and in what state.
// In memory each segment keeps one small integer per block pointing into a table of interned
// replica sets, so a lookup is O(1) and a freshly placed disk shares one set for all blocks.
// On the wire (schema.ts) a segment is run-length encoded.
import { UkaiError } from '../errors'

export type ReplicaState = 'in-sync' | 'syncing' | 'stale'
export const REPLICA_STATES: readonly ReplicaState[] = ['in-sync', 'syncing', 'stale']

export interface Replica { readonly node: string, readonly state: ReplicaState }
export type ReplicaSet = readonly Replica[]

export function replicaSetKey (set: ReplicaSet): string {
  return set.map(r => `${r.node}:${r.state}`).join(',')
}

export class PlacementSegment {
  readonly index: number
  readonly firstBlock: number
  readonly blockCount: number
  private readonly setIds: Uint32Array
  private readonly sets: ReplicaSet[] = []
  private readonly setIdByKey = new Map<string, number>()
  version = -1 // the znode version it was read at; -1 before it was ever written

  constructor (index: number, firstBlock: number, blockCount: number, initial: ReplicaSet) {
    this.index = index
    this.firstBlock = firstBlock
    this.blockCount = blockCount
    this.setIds = new Uint32Array(blockCount)
    this.intern(initial) // id 0
  }

  private intern (set: ReplicaSet): number {
    const key = replicaSetKey(set)
    let id = this.setIdByKey.get(key)
    if (id === undefined) {
      id = this.sets.length
      this.sets.push(Object.freeze(set.map(r => Object.freeze({ ...r }))))
      this.setIdByKey.set(key, id)
    }
    return id
  }

  replicas (block: number): ReplicaSet {
    return this.sets[this.setIds[this.offsetOf(block)]]
  }

  setReplicas (block: number, set: ReplicaSet): void {
    this.setIds[this.offsetOf(block)] = this.intern(set)
  }

  private offsetOf (block: number): number {
    const off = block - this.firstBlock
    if (!(off >= 0 && off < this.blockCount)) throw UkaiError.internal(`block ${block} is not in segment ${this.index}`)
    return off
  }

  // Consecutive blocks sharing one replica set, in block order.
  runs (): Array<{ length: number, replicas: ReplicaSet }> {
    const out: Array<{ length: number, replicas: ReplicaSet }> = []
    let i = 0
    while (i < this.blockCount) {
      const id = this.setIds[i]
      let j = i + 1
      while (j < this.blockCount && this.setIds[j] === id) j++
      out.push({ length: j - i, replicas: this.sets[id] })
      i = j
    }
    return out
  }

  static fromRuns (index: number, firstBlock: number, runs: Array<{ length: number, replicas: ReplicaSet }>): PlacementSegment {
    const blockCount = runs.reduce((n, r) => n + r.length, 0)
    if (runs.length === 0) throw UkaiError.internal(`placement segment ${index} has no runs`)
    const seg = new PlacementSegment(index, firstBlock, blockCount, runs[0].replicas)
    // One intern per run, then a fill: decoding a 16384-block segment costs microseconds, not
    // a replica-set key per block.
    let off = 0
    for (const run of runs) {
      seg.setIds.fill(seg.intern(run.replicas), off, off + run.length)
      off += run.length
    }
    return seg
  }

  clone (): PlacementSegment {
    const copy = PlacementSegment.fromRuns(this.index, this.firstBlock, this.runs())
    copy.version = this.version
    return copy
  }
}

// How many segments a disk of `blockCount` blocks has, and the block range of each.
export function segmentLayout (blockCount: number, segmentBlocks: number): Array<{ index: number, firstBlock: number, blockCount: number }> {
  const out = []
  for (let first = 0, i = 0; first < blockCount; first += segmentBlocks, i++) {
    out.push({ index: i, firstBlock: first, blockCount: Math.min(segmentBlocks, blockCount - first) })
  }
  return out
}

export function readableReplicas (set: ReplicaSet): Replica[] {
  return set.filter(r => r.state === 'in-sync')
}

// Writes go to every replica that is or is becoming current.
export function writableReplicas (set: ReplicaSet): Replica[] {
  return set.filter(r => r.state !== 'stale')
}

export function withState (set: ReplicaSet, node: string, state: ReplicaState): ReplicaSet {
  return set.map(r => r.node === node ? { node, state } : r)
}
