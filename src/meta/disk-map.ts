// The placement map of one disk, owned in one place: its segments as this process last read them,
// the watches that keep them current, the map lock, the conditional multi-segment update, and
// stale marking. The disk engine (VirtualDisk) and the relocation executor each hold one; neither
// reaches into the other for it.
//
// Invariants:
// - every change goes through `update`: one ZooKeeper multi over the changed segments, each
//   conditional on the version this map read (a conflict re-reads those segments and applies the
//   change again, at most 5 times), so two owners in different processes never overwrite each
//   other's change;
// - a map opened with a fence guard (`fenceVersion`: a relocation run without the write lease)
//   adds `check fence znode at that version` to every multi: once anybody took a newer lease
//   epoch, no change of this map commits any more, and `update` fails FENCED;
// - changes are serialized (the map lock) with each other and with segment reloads; readers
//   (`replicasOf`) never wait for it: they see the last committed map.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { Lifecycle } from '../lib/lifecycle'
import { PlacementSegment, ReplicaSet, replicaSetKey, withState } from './placement'
import { DiskRecord } from './schema'
import { MetaStore } from './store'

// Conflicting updates (another owner changed a segment meanwhile) are re-applied this often.
const UPDATE_ATTEMPTS_MAX = 6

// What reads the map (the write and read paths, the planner of a copy).
export interface PlacementView {
  replicasOf: (block: number) => ReplicaSet
  blockCount: () => number
  nodesInMap: () => Set<string>
}

// What changes it: conditional, serialized, all of `blocks` (every block when null) at once.
export interface PlacementUpdater {
  update: (blocks: number[] | null, change: (set: ReplicaSet, block: number) => ReplicaSet) => Promise<number>
}

export type PlacementMap = PlacementView & PlacementUpdater

export interface DiskMapOptions {
  // Called after the map changed here or was re-read (a cache keyed on placement drops itself).
  onChange?: () => void
  // Every update also checks that the disk's fence znode is still at this version.
  fenceVersion?: number
  logger?: Logger
}

export class DiskMap implements PlacementMap {
  private segments: PlacementSegment[]
  private segmentBlocks: number
  private readonly meta: MetaStore
  private readonly log: Logger
  private readonly onChange: () => void
  private readonly fenceVersion: number | undefined
  private lock: Promise<void> = Promise.resolve()
  private closed = false
  private readonly life = new Lifecycle({ release: () => { this.closed = true; this.unsubscribe() } })
  private unsubscribe: () => void = () => {}

  private constructor (meta: MetaStore, readonly name: string, segmentBlocks: number, opts: DiskMapOptions) {
    this.meta = meta
    this.segments = []
    this.segmentBlocks = segmentBlocks
    this.log = (opts.logger ?? silentLogger).child({ disk: name })
    this.onChange = opts.onChange ?? (() => {})
    this.fenceVersion = opts.fenceVersion
  }

  // Reads every segment of `record` (one pipelined round trip) with a watch on each.
  static async open (meta: MetaStore, record: DiskRecord, opts: DiskMapOptions = {}): Promise<DiskMap> {
    const map = new DiskMap(meta, record.name, record.segmentBlocks, opts)
    map.segments = await meta.loadPlacement(record, (i) => { map.reloadSegment(i).catch(safetyCatch) })
    return map
  }

  // Opens the map of disk `name` and keeps it current by itself: the segments' watches, the disk
  // record's (a grow adds segments) and a new session's (every watch set again). For an owner
  // with no disk record of its own to keep (an orphaned relocation); the disk engine does this
  // together with its record (VirtualDisk.reload).
  static async follow (meta: MetaStore, name: string, opts: DiskMapOptions = {}): Promise<DiskMap> {
    let map: DiskMap | null = null
    const reread = (rewatchAll: boolean): void => {
      const m = map
      if (m === null || m.closed) return
      meta.getDisk(name, () => { reread(false) }).then(async (record) => {
        await m.locked(async () => { if (!m.closed) await m.reloadForRecordLocked(record, rewatchAll) })
      }).catch((err) => { if (!isUkaiError(err, 'NOT_FOUND')) safetyCatch(err) })
    }
    const record = await meta.getDisk(name, () => { reread(false) })
    map = await DiskMap.open(meta, record, opts)
    map.unsubscribe = meta.onSession(() => { reread(true) })
    return map
  }

  // Watches fire no more (their reloads return at once); the map stays readable.
  close (): Promise<void> { return this.life.close() }

  // --- reading ----------------------------------------------------------------------------------

  replicasOf (block: number): ReplicaSet {
    const seg = this.segments[Math.floor(block / this.segmentBlocks)]
    if (seg === undefined) throw UkaiError.internal(`block ${block} of ${this.name} has no placement segment`)
    return seg.replicas(block)
  }

  get segmentCount (): number { return this.segments.length }

  blockCount (): number {
    return this.segments.reduce((n, s) => n + s.blockCount, 0)
  }

  // Every node named anywhere in the map.
  nodesInMap (): Set<string> {
    const nodes = new Set<string>()
    for (const seg of this.segments) for (const run of seg.runs()) for (const r of run.replicas) nodes.add(r.node)
    return nodes
  }

  // --- keeping it current -------------------------------------------------------------------------

  // Serializes `fn` with every update and reload of this map.
  async locked<T> (fn: () => Promise<T>): Promise<T> {
    const prev = this.lock
    let release!: () => void
    this.lock = new Promise<void>(resolve => { release = resolve })
    await prev
    try {
      return await fn()
    } finally {
      release()
    }
  }

  // A segment's watch fired: read it again (with a new watch).
  async reloadSegment (index: number): Promise<void> {
    if (this.closed) return
    await this.locked(async () => {
      try {
        const seg = await this.meta.loadSegment(this.name, index, () => { this.reloadSegment(index).catch(safetyCatch) })
        if (index < this.segments.length) this.segments[index] = seg
        this.onChange()
      } catch (err) {
        if (!isUkaiError(err, 'NOT_FOUND')) throw err
      }
    })
  }

  // The disk record changed. Existing segments carry watches of their own; only a session
  // replacement (`rewatchAll`: watches gone) or a resize (new segments) needs the map read again.
  // Call it under `locked` (the disk engine changes its record in the same step).
  async reloadForRecordLocked (record: DiskRecord, rewatchAll: boolean): Promise<void> {
    const oldCount = this.segments.length
    this.segmentBlocks = record.segmentBlocks
    const count = Math.ceil(Math.ceil(record.sizeBytes / record.blockSizeBytes) / record.segmentBlocks)
    if (!rewatchAll && count === oldCount) return
    this.segments = await this.meta.loadPlacement(record, (i) => { if (rewatchAll || i >= oldCount) this.reloadSegment(i).catch(safetyCatch) })
    this.onChange()
  }

  // --- changing it --------------------------------------------------------------------------------

  // Rewrites the replica sets of `blocks` (all blocks when null) in one ZooKeeper transaction,
  // conditional on the versions this map read (and on the fence guard, if any); on a conflict
  // re-reads and applies again. Readers see the new map as soon as it is committed.
  async update (blocks: number[] | null, change: (set: ReplicaSet, block: number) => ReplicaSet): Promise<number> {
    return await this.locked(async () => {
      for (let attempt = 0; ; attempt++) {
        const touched = new Map<number, PlacementSegment>()
        let changed = 0
        const visit = (block: number): void => {
          const index = Math.floor(block / this.segmentBlocks)
          const set = (touched.get(index) ?? this.segments[index]).replicas(block)
          const next = change(set, block)
          if (next !== set && replicaSetKey(next) !== replicaSetKey(set)) {
            // Cloned only when it changes: a sweep over every block (a hung node) stays cheap.
            let seg = touched.get(index)
            if (seg === undefined) { seg = this.segments[index].clone(); touched.set(index, seg) }
            seg.setReplicas(block, next)
            changed++
          }
        }
        if (blocks !== null) for (const b of blocks) visit(b)
        else for (const seg of this.segments) for (let b = seg.firstBlock; b < seg.firstBlock + seg.blockCount; b++) visit(b)
        if (touched.size === 0) return 0
        try {
          await this.meta.writeSegments(this.name, [...touched.values()], { fenceVersion: this.fenceVersion })
          for (const seg of touched.values()) this.segments[seg.index] = seg
          this.onChange()
          return changed
        } catch (err) {
          // Whether or not the write landed, the map may have moved: trust nothing cached.
          this.onChange()
          if (!isUkaiError(err, 'ZK_CONFLICT')) throw err
          if (this.fenceVersion !== undefined && await this.meta.fenceVersion(this.name) !== this.fenceVersion) {
            throw UkaiError.fenced(`placement of ${this.name} not changed: a newer lease epoch was taken (the fence moved)`)
          }
          if (attempt + 1 >= UPDATE_ATTEMPTS_MAX) throw err
          for (const index of touched.keys()) this.segments[index] = await this.meta.loadSegment(this.name, index)
        }
      }
    })
  }

  // Marks `node` stale for `blocks`. Callers never pass a block's last good replica.
  async markStale (node: string, blocks: number[]): Promise<void> {
    await this.update(blocks, (set) => set.some(r => r.node === node && r.state !== 'stale') ? withState(set, node, 'stale') : set)
    this.log.warn({ node, blocks: blocks.length }, 'replica marked stale')
  }

  // Marks `node` stale for those of `blocks` another node holds in sync; returns the rest (the
  // node is their only in-sync replica, or holds none of them and was never marked).
  async markStaleWhereCovered (node: string, blocks: number[]): Promise<number[]> {
    const changed = await this.update(blocks, (set) =>
      set.some(r => r.node === node && r.state !== 'stale') && set.some(r => r.node !== node && r.state === 'in-sync') ? withState(set, node, 'stale') : set)
    if (changed > 0) this.log.warn({ node, blocks: changed }, 'replica marked stale')
    return blocks.filter(b => this.replicasOf(b).some(r => r.node === node && r.state !== 'stale'))
  }

  // A hung node (it stopped answering, see storagenode/client.ts) is marked stale once for every
  // block of the disk where another replica is in sync — `blocks` (which it just missed) in any
  // case — in one transaction, so later writes no longer wait on it block after block. Blocks it
  // is the last in-sync replica of keep it: their writes wait for it (then EIO).
  async markHungNodeStale (node: string, blocks: number[]): Promise<void> {
    const missed = new Set(blocks)
    const changed = await this.update(null, (set, block) => {
      if (!set.some(r => r.node === node && r.state !== 'stale')) return set
      if (missed.has(block) || set.some(r => r.node !== node && r.state === 'in-sync')) return withState(set, node, 'stale')
      return set
    })
    if (changed > 0) this.log.warn({ node, blocks: changed }, 'hung replica marked stale for every block with another in-sync replica')
  }
}
