// The disk engine for one open disk: splits I/O per block, writes every non-stale replica,
// reads the nearest in-sync one, and carries the write lease. The placement map (segments,
// watches, conditional updates, stale marking) is a DiskMap it holds (src/meta/disk-map.ts).
//
// Invariants (DESIGN.md "Write path and ownership"):
// - a replica that failed a write is marked stale in ZooKeeper before the write is acknowledged;
// - the last replica that holds a block's newest bytes is never marked stale;
// - every write and flush carries the lease epoch; a FENCED answer means the lease moved;
// - flush() (fsync, close, hand-over, snapshot commit; dirty-flush.ts) returns only when every block written
//   since the last flush is durable on a replica that stays in sync; else it fails (EIO) and
//   the blocks stay dirty, so a later flush does not claim what this one could not.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { HeldLease, LeaseManager } from '../meta/lease'
import { DiskMap } from '../meta/disk-map'
import { Replica, ReplicaSet, readableReplicas, writableReplicas } from '../meta/placement'
import { DiskIoCounters, DiskRecord, SnapshotRecord, validateSnapshotName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { RangeLocks } from '../lib/range-locks'
import { BlockLocks } from '../lib/block-locks'
import { splitRange } from './block-range'
import { DiskLocalReads, LocalReads } from './short-circuit-reads'
import { NodePool } from './node-pool'
import { ParentChain } from './parent-chain'
import { IO_RETRY_PAUSE_MS, readFromReplicas } from './replica-read'
import { nearestFirst } from '../meta/placement-policy'
import { sleep } from '../lib/timers'
import { forEachBounded } from '../lib/worker-pool'
import { Lifecycle } from '../lib/lifecycle'
import { IoThrottle, UNLIMITED } from '../lib/io-throttle'
import { limitsOfRecord } from './disk-qos'
import { DirtyFlusher } from './dirty-flush'
import { FLUSH_BEHIND_IDLE_MS_DEFAULT } from './flush-behind'
import { traceWrite, writeTraceOn } from '../lib/write-trace'

// How long an I/O keeps retrying while no replica answers (a node restarting, a network blip)
// before the guest sees EIO.
export const IO_RETRY_MS_DEFAULT = 10_000
export { FLUSH_BEHIND_IDLE_MS_DEFAULT }
// Blocks a large discard (a whole-disk TRIM) keeps in flight; each goes to every replica.
// Measured: 64 GiB of 4 MiB blocks, 2 replicas, nothing written: 5-8 s.
const DISCARD_BLOCKS_IN_FLIGHT = 64

export interface VirtualDiskDeps {
  meta: MetaStore
  pool: NodePool
  leases: LeaseManager
  ioRetryMs?: number
  // Flush-behind's idle delay (flush-behind.ts; 0: off, blocks wait for the guest's fsync).
  flushBehindMs?: number
  // Bytes read and written through this disk, owned by the agent (they outlive an open).
  io?: DiskIoCounters
  // Short-circuit reads from nodes on this host (absent: every read goes over gRPC).
  localReads?: LocalReads
  // Called each time this disk's lease is (re)acquired here, after the nodes were fenced.
  onLeaseAcquired?: (disk: VirtualDisk) => void
  // Called after a replica that failed a write was marked stale (code: the failure's UkaiError code).
  onReplicaStale?: (disk: VirtualDisk, node: string, code: string) => void
  logger?: Logger
}

export class VirtualDisk {
  record: DiskRecord & { version: number }
  // The placement map (src/meta/disk-map.ts): segments, watches, map lock, stale marking.
  readonly map: DiskMap
  private readonly meta: MetaStore
  private readonly pool: NodePool
  private readonly leases: LeaseManager
  private readonly log: Logger
  private lease: HeldLease | null = null
  private acquiring: Promise<HeldLease | null> | null = null
  private handingOver: Promise<void> | null = null
  private inFlightWrites = 0
  private mutationCount = 0
  private writesDrained: Array<() => void> = []
  // The blocks written per node since their last flush, and the (group-commit) flush of them.
  private readonly flusher: DirtyFlusher
  readonly blockLocks = new BlockLocks()
  // Overlapping writes and discards of a block go out in the order they arrived, one after the
  // other: the kernel hands us direct writes to the file in parallel (FOPEN_PARALLEL_DIRECT_WRITES),
  // and two overlapping ones in flight at once could otherwise land in different orders on two
  // replicas (a retry, a clone's copy-on-write first). Disjoint ranges still run in parallel.
  private readonly rangeOrder = new RangeLocks()
  private readTurn = 0
  private closed = false
  // close(): flush, then let the lease go; destroy(err): writes and flushes waiting for a replica
  // fail with err, nothing is flushed, the lease is let go all the same (see src/lib/lifecycle.ts)
  private readonly aborted = new AbortController()
  private readonly life = new Lifecycle({
    drain: async () => { await this.flushEverywhere() },
    abort: (err) => { this.aborted.abort(err); this.throttle.abort(err) },
    release: async () => { await this.releaseOnClose() }
  })
  private readonly ioRetryMs: number
  private readonly onLeaseAcquired?: (disk: VirtualDisk) => void
  private readonly onReplicaStale?: VirtualDiskDeps['onReplicaStale']
  private readonly io: DiskIoCounters
  // A clone's ancestry (null for other disks), and the blocks this holder already made its own.
  private chain: ParentChain | null = null
  private materialized = new Set<number>()
  // While a snapshot commits, new writes wait here (the ones in flight drain first).
  private writeGate: Promise<void> | null = null
  private snapshotWatchArmed = false
  private readonly local: DiskLocalReads | undefined
  // The disk's QoS (`ukai disk qos`): every read, write and discard of every path that opens the
  // disk here (the FUSE file, NBD exports, an import) takes its turn; set from the record, so a
  // change arrives with the record's watch (reload) or the agent's (adoptFileAttrs).
  private readonly throttle: IoThrottle
  private qosLifted = false

  private constructor (deps: VirtualDiskDeps, record: DiskRecord & { version: number }, map: DiskMap) {
    this.meta = deps.meta
    this.pool = deps.pool
    this.leases = deps.leases
    this.log = (deps.logger ?? silentLogger).child({ disk: record.name })
    this.ioRetryMs = deps.ioRetryMs ?? IO_RETRY_MS_DEFAULT
    this.onLeaseAcquired = deps.onLeaseAcquired
    this.onReplicaStale = deps.onReplicaStale
    this.io = deps.io ?? { readBytes: 0, writeBytes: 0 }
    this.record = record
    this.map = map
    this.local = deps.localReads?.forDisk(record.uuid)
    this.throttle = new IoThrottle(limitsOfRecord(record, UNLIMITED, this.log))
    this.flusher = new DirtyFlusher({
      diskName: record.name,
      diskUuid: record.uuid,
      map,
      pool: this.pool,
      ioRetryMs: this.ioRetryMs,
      signal: this.aborted.signal,
      log: this.log,
      heldEpoch: () => this.lease?.leaseEpoch ?? null,
      flushBehindMs: deps.flushBehindMs ?? FLUSH_BEHIND_IDLE_MS_DEFAULT,
      counters: this.io,
      // A FENCED flush: the lease moved; drop ours if it is still the one the writes were under.
      onFenced: (epoch) => { if (this.lease?.leaseEpoch === epoch) { this.leases.dropLocal(this.name); this.lease = null } }
    })
  }

  static async open (deps: VirtualDiskDeps, name: string): Promise<VirtualDisk> {
    let disk: VirtualDisk | null = null
    const record = await deps.meta.getDisk(name, () => disk?.reload().catch(safetyCatch))
    // Any placement change (reloaded, rewritten, stale marking) invalidates short-circuit reads.
    const map = await DiskMap.open(deps.meta, record, { onChange: () => disk?.local?.dropAll(), logger: deps.logger })
    disk = new VirtualDisk(deps, record, map)
    disk.chain = await ParentChain.open(deps.meta, deps.pool, record, disk.ioRetryMs)
    return disk
  }

  get name (): string { return this.record.name }
  get sizeBytes (): number { return this.record.sizeBytes }
  get leaseEpoch (): number | null { return this.lease?.leaseEpoch ?? null }

  // --- metadata refresh -----------------------------------------------------------------------

  // The disk record changed (resize, epoch): re-read it and the placement. `rewatchAll` after a
  // session replacement, whose watches are gone; otherwise only new segments get a watch.
  async reload (rewatchAll = false): Promise<void> {
    if (this.closed) return
    try {
      const record = await this.meta.getDisk(this.name, () => this.reload().catch(safetyCatch))
      await this.map.locked(async () => {
        // An older answer (this read raced a fresher one, e.g. at lease acquisition) never wins.
        if (record.version < this.record.version) return
        if (record.parent === null && this.chain !== null) { this.chain.close().catch(safetyCatch); this.chain = null }  // flattened
        this.record = record
        this.adoptQos(record)
        this.local?.dropAll()
        // A snapshot commit needs no new map; a session replacement or a resize does.
        await this.map.reloadForRecordLocked(record, rewatchAll)
      })
    } catch (err) {
      if (isUkaiError(err, 'NOT_FOUND')) { this.log.warn('disk was deleted while open'); return }
      throw err
    }
  }

  // Owner, mode and xattrs changed here: seen at once, without waiting for the watch's reload
  // (which brings the rest of the record, and the placement along with it).
  adoptFileAttrs (rec: DiskRecord & { version?: number }): void {
    this.record = { ...this.record, file: rec.file, xattrs: rec.xattrs }
    // The limits too, unless this is an older read than the record we have (whose qos stands).
    if (rec.version === undefined || rec.version >= this.record.version) {
      this.record.qos = rec.qos
      this.adoptQos(rec)
    }
  }

  // Shutdown: requests already taken (an NBD connection's 32, up to 32 MiB each) finish at full
  // speed, so a tight cap cannot hold the mount's shutdown for minutes; later limits are ignored.
  liftQos (): void {
    this.qosLifted = true
    this.throttle.setLimits(UNLIMITED)
  }

  private adoptQos (rec: DiskRecord): void {
    if (this.qosLifted) return
    const next = limitsOfRecord(rec, this.throttle.limits, this.log)
    const cur = this.throttle.limits
    if (next.opsPerSec === cur.opsPerSec && next.bytesPerSec === cur.bytesPerSec && next.burstOps === cur.burstOps && next.burstBytes === cur.burstBytes) return
    this.log.info({ ...next }, 'qos limits changed')
    this.throttle.setLimits(next)
  }

  // Placement of one block as last committed (the map's; see src/meta/disk-map.ts).
  replicasOf (block: number): ReplicaSet { return this.map.replicasOf(block) }

  blockCount (): number { return this.map.blockCount() }

  // --- lease --------------------------------------------------------------------------------

  async ensureLease (): Promise<HeldLease> {
    if (this.handingOver !== null) await this.handingOver
    const held = this.leases.holding(this.name)
    if (this.lease !== null && held?.leaseEpoch === this.lease.leaseEpoch) return this.lease
    this.lease = null
    if (this.acquiring === null) this.acquiring = this.becomeHolder(async () => await this.leases.acquire(this.name))
    // (null: a takeLeaseIfFree found it held meanwhile; ask for it now)
    return await this.acquiring ?? await this.ensureLease()
  }

  // Takes the lease only if nobody holds it (nobody asked to hand over, no holder fenced); true
  // when this disk holds it afterwards. The agent calls it when the lease is freed while the disk
  // is open for write here (a live migration's destination: docs/architecture.md).
  async takeLeaseIfFree (): Promise<boolean> {
    if (this.handingOver !== null || this.closed) return false
    const held = this.leases.holding(this.name)
    if (this.lease !== null && held?.leaseEpoch === this.lease.leaseEpoch) return true
    if (this.acquiring === null) this.acquiring = this.becomeHolder(async () => await this.leases.acquireIfFree(this.name))
    return (await this.acquiring) !== null
  }

  // The lease from `acquire`, then what must precede our first write under it.
  private becomeHolder (acquire: () => Promise<HeldLease | null>): Promise<HeldLease | null> {
    return (async () => {
      const lease = await acquire()
      if (lease === null) return null
      const t0 = Date.now()
      await this.fenceNodes(lease.leaseEpoch)
      const t1 = Date.now()
      // Snapshot epochs move only under the lease: what we read now is what we write at,
      // until we commit a snapshot ourselves (a cached record may predate a commit elsewhere).
      const fresh = await this.meta.getDisk(this.name)
      if (fresh.version > this.record.version) this.record = fresh
      // The steps after the lease, timed: a migration's first write on the destination waits for them.
      this.log.info({ leaseEpoch: lease.leaseEpoch, fenceMs: t1 - t0, recordMs: Date.now() - t1 }, 'lease ready for writes')
      this.materialized.clear()
      this.lease = lease
      this.watchSnapshotRequests()
      this.onLeaseAcquired?.(this)
      return lease
    })().finally(() => { this.acquiring = null })
  }

  // Tells every node holding a replica about the new epoch, so the previous holder is refused
  // everywhere at once, not only on the blocks this host happens to write.
  private async fenceNodes (leaseEpoch: number): Promise<void> {
    await this.pool.fence(this.map.nodesInMap(), this.record.uuid, leaseEpoch, this.log)
  }

  // Another host wants the lease: let writes in flight finish, flush, release.
  handOver (): Promise<void> {
    if (this.handingOver !== null) return this.handingOver
    this.handingOver = (async () => {
      try {
        while (this.writeGate !== null) await this.writeGate  // a snapshot commit finishes first
        while (this.inFlightWrites > 0) await new Promise<void>(resolve => this.writesDrained.push(resolve))
        // A failed flush keeps its blocks dirty: a later fsync here fails rather than succeed.
        // Everywhere: the next holder's relocation run does not know what we wrote to syncing replicas.
        await this.flushEverywhere().catch((err) => this.log.error({ err: String(err) }, 'flush before hand-over failed'))
        this.lease = null
        await this.leases.release(this.name)
      } finally {
        this.handingOver = null
      }
    })()
    return this.handingOver
  }

  leaseLost (): void { this.lease = null }

  // The last handle on this host closed but the disk stays cached (the agent's warm disks):
  // writes made durable and the lease let go, as at close; the map and its watches are kept.
  async idle (): Promise<void> {
    await this.flushEverywhere()
    if (this.lease === null) return
    this.lease = null
    await this.leases.release(this.name)
  }

  // Our session expired and the lease was re-asserted at the same epoch: the snapshot-request
  // watch died with the old session; set it again (a request may be waiting already).
  leaseReasserted (): void {
    if (this.lease === null || this.closed) return
    this.snapshotWatchArmed = false
    this.watchSnapshotRequests()
  }

  // --- clones -------------------------------------------------------------------------------

  get isClone (): boolean { return this.chain !== null }
  // Block writes and discards ended on this host so far: whoever cached which blocks hold data
  // (vdisk/allocation.ts) knows to ask again. Counted when each ends, so a change acknowledged
  // after such a cache was filled always moves it.
  get mutations (): number { return this.mutationCount }

  // Blocks a flatten must copy (the ancestors' written blocks within this disk).
  async parentBlocks (): Promise<number[]> {
    if (this.chain === null) return []
    const n = this.blockCount()
    return (await this.chain.writtenBlocks(this.meta)).filter(b => b < n)
  }

  // Copies the parent's version of `block` into every writable replica that lacks one.
  async materializeBlock (block: number): Promise<void> {
    const chain = this.chain
    if (chain === null) return
    const lease = await this.ensureLease()
    await this.blockLocks.acquireWrite(block)
    this.local?.mutating(block, null)
    try {
      for (const r of writableReplicas(this.replicasOf(block))) await chain.materialize(this.record, block, r.node, lease.leaseEpoch)
      this.materialized.add(block)
    } finally {
      this.local?.mutating(block, null)
      this.blockLocks.releaseWrite(block)
    }
  }

  // --- snapshots ----------------------------------------------------------------------------

  // While we hold the lease, a snapshot request is ours to commit. One watch at a time: it is
  // re-armed when it fires while we hold the lease, and a new lease looks once more (without a
  // second watch) for a request left while we did not hold it.
  private watchSnapshotRequests (): void {
    const look = (arm: boolean): void => {
      if (arm) this.snapshotWatchArmed = true
      const onFire = (): void => {
        this.snapshotWatchArmed = false
        if (!this.closed && this.lease !== null) look(true)
      }
      this.meta.getSnapshotRequest(this.name, arm ? onFire : undefined).then(async (req) => {
        if (req === null || req.error !== undefined || this.lease === null || this.closed) return
        try {
          const rec = await this.commitSnapshot(req.snapshot, req.version)
          this.log.info({ snapshot: rec.name, epoch: rec.epoch }, 'snapshot committed')
        } catch (err) {
          this.log.warn({ snapshot: req.snapshot, err: String(err) }, 'snapshot request refused')
          await this.meta.failSnapshotRequest(this.name, req, err as Error).catch(safetyCatch)
        }
      }, safetyCatch)
    }
    look(!this.snapshotWatchArmed)
  }

  // Commits the current epoch as snapshot `name`: new writes wait, writes in flight drain and are
  // flushed, then one transaction records the snapshot and moves the disk to the next epoch
  // (conditional on our lease and the record version); writes resume at the new epoch. So a
  // write acknowledged before the commit is in the snapshot, and nothing writes into its epoch
  // afterwards. `requestVersion`: the request znode this answers (removed in the transaction).
  async commitSnapshot (name: string, requestVersion?: number): Promise<SnapshotRecord> {
    validateSnapshotName(name)
    while (this.writeGate !== null) await this.writeGate
    let open!: () => void
    this.writeGate = new Promise<void>(resolve => { open = resolve })
    try {
      while (this.inFlightWrites > 0) await new Promise<void>(resolve => this.writesDrained.push(resolve))
      const lease = this.lease
      if (lease === null) throw UkaiError.conflict(`this host does not hold the lease of ${this.name}`)
      await this.flush()
      const leaseVersion = await this.meta.leaseVersion(this.name, lease.leaseEpoch)
      if (leaseVersion === null) throw UkaiError.conflict(`the lease of ${this.name} moved while committing the snapshot`)
      const record = await this.meta.getDisk(this.name)
      const snap = await this.meta.commitSnapshot(record, name, { leaseVersion, requestVersion })
      const { version, ...rest } = record
      this.record = { ...rest, epoch: record.epoch + 1, version: version + 1 }
      this.local?.dropAll()
      return snap
    } finally {
      this.writeGate = null
      open()
    }
  }

  // --- I/O ----------------------------------------------------------------------------------

  async read (offset: number, length: number): Promise<Buffer> {
    if (offset >= this.sizeBytes || length === 0) return Buffer.alloc(0)
    const len = Math.min(length, this.sizeBytes - offset)
    const turn = this.throttle.admit(len)
    if (turn !== undefined) await turn
    const pieces = splitRange(offset, len, this.record.blockSizeBytes)
    if (pieces.length === 1) {
      // Most reads stay inside one block: the block's answer is the result (no second copy;
      // the FUSE adapter copies it into the kernel's buffer anyway).
      const data = await this.readBlock(pieces[0].block, pieces[0].offsetInBlock, len)
      this.io.readBytes += len
      return data
    }
    const out = Buffer.allocUnsafe(len)
    await Promise.all(pieces.map(async (p) => {
      const data = await this.readBlock(p.block, p.offsetInBlock, p.length)
      data.copy(out, p.offsetInRange)
    }))
    this.io.readBytes += len
    return out
  }

  // Nearest in-sync replica first; on failure the next; when none answers, retry for a while.
  // A clone's block it never wrote reads from its parent.
  private async readBlock (block: number, offsetInBlock: number, length: number): Promise<Buffer> {
    const chain = this.chain
    const local = this.local
    const readable = local === undefined ? [] : readableReplicas(this.replicasOf(block))
    const nearest = readable.length === 0 ? undefined : nearestFirst(this.pool, readable, this.readTurn)[0]
    if (local !== undefined && nearest !== undefined && local.capable(nearest.node)) {
      // Among this host's replicas always the same one (the lowest id): reading a file costs the
      // node nothing, so there is no load to spread, and one open file per block suffices.
      const node = readable.map(r => r.node).filter(n => local.capable(n)).sort()[0]
      const got = await local.read(node, block, this.record.epoch, offsetInBlock, length, this.lease !== null)
      if (got !== null && (got !== 'absent' || chain === null)) {
        this.io.localReadBytes = (this.io.localReadBytes ?? 0) + length
        return got === 'absent' ? Buffer.alloc(length) : got
      }
      // A clone's block it has no version of reads through to the parent, as below.
      if (got === 'absent') return await (chain as ParentChain).read(block, offsetInBlock, length)
    }
    const data = await readFromReplicas({
      pool: this.pool,
      candidates: () => nearestFirst(this.pool, readableReplicas(this.replicasOf(block)), this.readTurn++),
      diskUuid: this.record.uuid,
      block,
      epoch: this.record.epoch,
      offset: offsetInBlock,
      length,
      absentAsNull: chain !== null,
      ioRetryMs: this.ioRetryMs,
      what: `block ${block} of ${this.name}`,
      onCorrupt: async (nodes) => { await this.markCorrupt(block, nodes) }
    })
    return data ?? await (chain as ParentChain).read(block, offsetInBlock, length)
  }

  // Replicas whose node refused the block for a checksum mismatch, after another replica served
  // it: marked stale so repair copies the block again (replica-read.ts). A failed marking is
  // logged, not the read's failure: the good bytes were served, the next read finds it again.
  private async markCorrupt (block: number, nodes: string[]): Promise<void> {
    for (const node of nodes) {
      this.log.error({ node, block }, 'replica failed its checksum: marking it stale')
      this.local?.mutating(block, null)  // nothing short-circuit read from it stays cached
      try {
        await this.map.markStale(node, [block])
        this.onReplicaStale?.(this, node, 'CHECKSUM')
      } catch (err) {
        safetyCatch(err)
        this.log.warn({ node, block, err: (err as Error).message }, 'could not mark the corrupt replica stale (the next read finds it again)')
      }
    }
  }

  async write (offset: number, data: Buffer): Promise<void> {
    if (offset + data.length > this.sizeBytes) {
      throw UkaiError.outOfRange(`write of ${data.length} bytes at ${offset} ends past the end of ${this.name} (${this.sizeBytes} bytes)`)
    }
    if (data.length === 0) return
    this.aborted.signal.throwIfAborted()
    const turn = this.throttle.admit(data.length)
    if (turn !== undefined) await turn
    const lease = await this.ensureLease()
    while (this.writeGate !== null) await this.writeGate
    if (writeTraceOn) traceWrite('disk.lease', offset)
    this.inFlightWrites++
    try {
      await Promise.all(splitRange(offset, data.length, this.record.blockSizeBytes).map(p =>
        this.writeBlock(lease, p.block, p.offsetInBlock, data.subarray(p.offsetInRange, p.offsetInRange + p.length))))
      this.io.writeBytes += data.length
      if (writeTraceOn) traceWrite('disk.done', offset)
    } finally {
      if (--this.inFlightWrites === 0) for (const wake of this.writesDrained.splice(0)) wake()
    }
  }

  private async writeBlock (lease: HeldLease, block: number, offsetInBlock: number, data: Buffer): Promise<void> {
    await this.mutateBlock(lease, block, offsetInBlock, data.length, 'write', this.record.epoch, node => this.pool.client(node).write({
      diskUuid: this.record.uuid, block, epoch: this.record.epoch, offset: offsetInBlock, data, leaseEpoch: lease.leaseEpoch
    }))
  }

  // Makes [offset, offset+length) read as zeros and gives its space back on every replica
  // (guest TRIM, fallocate PUNCH_HOLE). Fenced and replicated like a write. Only the head
  // epoch changes: a committed snapshot's version of a block stays as it is on the nodes.
  async discard (offset: number, length: number): Promise<void> {
    const end = Math.min(offset + length, this.sizeBytes)  // past the end is already nothing
    if (end <= offset) return
    this.aborted.signal.throwIfAborted()
    // One operation, no bytes: a discard moves no data (a whole-disk TRIM is one request).
    const turn = this.throttle.admit(0)
    if (turn !== undefined) await turn
    const lease = await this.ensureLease()
    this.inFlightWrites++
    try {
      const pieces = splitRange(offset, end - offset, this.record.blockSizeBytes)
      await forEachBounded(pieces, DISCARD_BLOCKS_IN_FLIGHT, async (p) => {
        await this.mutateBlock(lease, p.block, p.offsetInBlock, p.length, 'discard', null, node => this.pool.client(node).discard({
          diskUuid: this.record.uuid, block: p.block, epoch: this.record.epoch, offset: p.offsetInBlock, length: p.length, leaseEpoch: lease.leaseEpoch
        }))
      })
    } finally {
      if (--this.inFlightWrites === 0) for (const wake of this.writesDrained.splice(0)) wake()
    }
  }

  // `writeEpoch`: the version the change writes into (null: it may remove or replace versions).
  private async mutateBlock (lease: HeldLease, block: number, offsetInBlock: number, length: number, verb: string, writeEpoch: number | null, send: (node: string) => Promise<string>): Promise<void> {
    await this.rangeOrder.run(String(block), offsetInBlock, offsetInBlock + length, async () => {
      await this.blockLocks.acquireWrite(block)
      if (writeTraceOn) traceWrite('disk.locked', block, offsetInBlock)
      this.local?.mutating(block, writeEpoch)
      try {
        await this.mutateBlockLocked(lease, block, verb, send)
        if (writeTraceOn) traceWrite('disk.acked', block, offsetInBlock)
      } finally {
        this.local?.mutating(block, writeEpoch)
        this.blockLocks.releaseWrite(block)
        this.mutationCount++
      }
    })
  }

  // Sends one change of `block` to every writable replica; see the invariants at the top.
  private async mutateBlockLocked (lease: HeldLease, block: number, verb: string, send: (node: string) => Promise<string>): Promise<void> {
    const deadline = Date.now() + this.ioRetryMs
    let targets: Replica[]
    // Each fulfilled one: the incarnation of the node process that acknowledged the change.
    let results: Array<PromiseSettledResult<string>>
    for (;;) {
      targets = writableReplicas(this.replicasOf(block))
      if (targets.length === 0) throw UkaiError.io(`block ${block} of ${this.name} has no writable replica`)
      // A clone's block is first given its own copy of the parent's version on each replica.
      const chain = this.materialized.has(block) ? null : this.chain
      results = await Promise.allSettled(targets.map(async r => {
        if (chain !== null) await chain.materialize(this.record, block, r.node, lease.leaseEpoch)
        return await send(r.node)
      }))
      // No replica reachable: nothing can be marked stale (that would lose the block), so wait
      // for one to come back, up to the deadline.
      const allUnavailable = results.every(r => r.status === 'rejected' && isUkaiError(r.reason, 'UNAVAILABLE'))
      if (!allUnavailable || Date.now() >= deadline) break
      await sleep(IO_RETRY_PAUSE_MS, { signal: this.aborted.signal })
    }
    if (this.chain !== null && results.every(r => r.status === 'fulfilled')) this.materialized.add(block)
    const failed: Array<{ replica: Replica, err: unknown }> = []
    results.forEach((res, i) => {
      if (res.status === 'fulfilled') this.flusher.note(targets[i].node, block, lease.leaseEpoch, res.value)
      else failed.push({ replica: targets[i], err: res.reason })
    })
    if (failed.some(f => isUkaiError(f.err, 'FENCED'))) {
      this.leases.dropLocal(this.name)
      this.lease = null
      throw UkaiError.fenced(`${verb} to ${this.name} refused: the lease moved to another host (epoch ${lease.leaseEpoch} is stale)`)
    }
    if (failed.length === 0) return
    if (failed.length === targets.length) {
      const why = failed.map(f => `${f.replica.node}: ${(f.err as Error).message}`).join('; ')
      // Full everywhere is ENOSPC for the guest, not a generic I/O error.
      if (failed.some(f => isUkaiError(f.err, 'NO_SPACE'))) throw UkaiError.noSpace(`${verb} to block ${block} of ${this.name}: no replica has space (${why})`)
      throw UkaiError.io(`${verb} to block ${block} of ${this.name} failed on every replica: ${why}`)
    }
    for (const f of failed) {
      this.log.warn({ node: f.replica.node, block, verb, err: (f.err as Error).message }, 'replica write failed')
      // A hung replica is left behind for the whole disk at once (see markHungNodeStale).
      if (this.pool.isHung(f.replica.node)) await this.map.markHungNodeStale(f.replica.node, [block])
      else await this.map.markStale(f.replica.node, [block])
      this.onReplicaStale?.(this, f.replica.node, (f.err as { code?: string }).code ?? 'UNKNOWN')
    }
  }

  // Makes every acknowledged write durable on the nodes, or fails (src/vdisk/dirty-flush.ts).
  flush (): Promise<void> { return this.flusher.flush() }

  // The same, and also durable on replicas still syncing (flush() sends them their flush without
  // waiting): before a relocation marks them in sync, and when this host lets the disk go.
  flushEverywhere (): Promise<void> { return this.flusher.flushEverywhere() }

  // Flushes once (a second call, also a concurrent one, returns the first one's promise), then
  // lets the lease go.
  close (): Promise<void> { return this.life.close() }

  // Aborts: writes and flushes waiting for a replica fail with err, nothing more is flushed (an
  // fsync after this fails), the lease is let go. Writes not flushed are not durable, as after a
  // crash; fencing refuses any still in flight once another host takes the lease.
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }

  get closing (): boolean { return this.life.closing }

  private async releaseOnClose (): Promise<void> {
    // Released also when the flush failed (its error still reaches the caller): a lease kept
    // by a closed disk would make the next host wait for a forced take-over.
    try {
      if (this.lease !== null) await this.leases.release(this.name)
    } finally {
      this.lease = null
      this.closed = true
      await Promise.all([this.map.close(), this.chain?.close(), this.local?.close()])
    }
  }
}
