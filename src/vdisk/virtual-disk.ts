// The disk engine for one open disk: splits I/O per block, writes every non-stale replica,
// reads the nearest in-sync one, and carries the write lease. The placement map (segments,
// watches, conditional updates, stale marking) is a DiskMap it holds (src/meta/disk-map.ts);
// what one read, write or discard does is its DiskDataPath (data-path.ts), while this class owns
// the record, the lease, snapshots, clones and the lifecycle.
//
// Invariants (DESIGN.md "Write path and ownership"):
// - a replica that failed a write is marked stale in ZooKeeper before the write is acknowledged
//   (a syncing one, whose answer trails: before the block's write lock is let go);
// - the last replica that holds a block's newest bytes is never marked stale;
// - every write and flush carries the lease epoch; a FENCED answer means the lease moved;
// - flush() (fsync, close, hand-over, snapshot commit; dirty-flush.ts) returns only when every block written
//   since the last flush is durable on a replica that stays in sync; else it fails (EIO) and
//   the blocks stay dirty, so a later flush does not claim what this one could not.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { HeldLease, LeaseManager } from '../meta/lease'
import { DiskMap } from '../meta/disk-map'
import { ReplicaSet, writableReplicas } from '../meta/placement'
import { DiskIoCounters, DiskRecord, SnapshotRecord, validateSnapshotName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { BlockLocks } from '../lib/block-locks'
import { DiskLocalReads, LocalReads } from './short-circuit-reads'
import { NodePool } from './node-pool'
import { ParentChain } from './parent-chain'
import { Lifecycle } from '../lib/lifecycle'
import { IoThrottle, UNLIMITED } from '../lib/io-throttle'
import { limitsOfRecord } from './disk-qos'
import { DirtyFlusher } from './dirty-flush'
import { DiskDataPath } from './data-path'
import { FLUSH_BEHIND_IDLE_MS_DEFAULT } from './flush-behind'

// How long an I/O keeps retrying while no replica answers (a node restarting, a network blip)
// before the guest sees EIO.
export const IO_RETRY_MS_DEFAULT = 10_000
export { FLUSH_BEHIND_IDLE_MS_DEFAULT }

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
  // The blocks written per node since their last flush, and the (group-commit) flush of them.
  private readonly flusher: DirtyFlusher
  readonly blockLocks = new BlockLocks()
  // Reads, writes and discards (data-path.ts), and the writes in flight a snapshot or a hand-over waits for.
  private readonly dataPath: DiskDataPath
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
    this.dataPath = new DiskDataPath({
      name: record.name,
      pool: this.pool,
      map,
      blockLocks: this.blockLocks,
      flusher: this.flusher,
      throttle: this.throttle,
      io: this.io,
      local: this.local,
      materialized: this.materialized,
      ioRetryMs: this.ioRetryMs,
      signal: this.aborted.signal,
      log: this.log,
      record: () => this.record,
      chain: () => this.chain,
      holdsLease: () => this.lease !== null,
      ensureLease: async () => await this.ensureLease(),
      onFenced: () => { this.leases.dropLocal(this.name); this.lease = null },
      onStale: (node, code) => this.onReplicaStale?.(this, node, code)
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
        await this.dataPath.quiesce()  // a snapshot commit finishes first, then the writes in flight
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
  // Block writes and discards ended on this host so far (data-path.ts): whoever cached which
  // blocks hold data (vdisk/allocation.ts) knows to ask again.
  get mutations (): number { return this.dataPath.mutations }

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
    return await this.dataPath.withWritesHeld(async () => {
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
    })
  }

  // --- I/O (data-path.ts) -------------------------------------------------------------------

  read (offset: number, length: number): Promise<Buffer> { return this.dataPath.read(offset, length) }

  write (offset: number, data: Buffer): Promise<void> { return this.dataPath.write(offset, data) }

  // Makes [offset, offset+length) read as zeros and gives its space back on every replica
  // (guest TRIM, fallocate PUNCH_HOLE), fenced and replicated like a write.
  discard (offset: number, length: number): Promise<void> { return this.dataPath.discard(offset, length) }

  // Makes every acknowledged write durable on the nodes, or fails (src/vdisk/dirty-flush.ts).
  flush (): Promise<void> { return this.flusher.flush() }

  // The same, and also durable on replicas still syncing (flush() sends them their flush without
  // waiting): before a relocation marks them in sync, and when this host lets the disk go.
  // Waits first for the trailing writes in flight (data-path.ts), so what they wrote is in it.
  async flushEverywhere (): Promise<void> {
    await this.dataPath.trailingDrained()
    await this.flusher.flushEverywhere()
  }

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
