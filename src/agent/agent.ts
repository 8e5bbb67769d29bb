// The hypervisor agent's view of the cluster: every disk as a file, open handles, and the disk
// engines behind them. The FUSE adapter calls only this class.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { LeaseManager } from '../meta/lease'
import { DiskFileOwner, DiskIoCounters, DiskRecord, OpenRecord, SnapshotRecord, SnapshotRef, formatSnapshotRef, parseSnapshotRef, validateDiskName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { createDisk, deleteDisk, resizeDisk } from '../admin/disk-admin'
import { DiskUsage } from './disk-usage'
import { FreeLeaseFollower } from './free-lease'
import { VersionedDiskRecord, getXattr, ownerOf, updateDiskRecord, withMode, withOwner, withXattr, withoutXattr, xattrNames } from './disk-file-attrs'
import { LocalReads } from '../vdisk/short-circuit-reads'
import { NodePool } from '../vdisk/node-pool'
import { SnapshotImage } from '../vdisk/snapshot-image'
import { IO_RETRY_MS_DEFAULT, VirtualDisk } from '../vdisk/virtual-disk'
import { AllocationSource, HeadAllocation, SnapshotAllocation } from '../vdisk/allocation'

export interface AgentOptions {
  meta: MetaStore
  host: string
  site: string
  mountPoint: string
  handoverTimeoutMs?: number
  ioRetryMs?: number
  flushBehindMs?: number                 // background flush of written blocks after this (`--flush-behind-ms`; 0: off)
  nodeAddresses?: Record<string, string> // node id → HOST:PORT used from this host (`--node-address`)
  localReads?: boolean                   // short-circuit reads from nodes on this host (default on)
  localReadFiles?: number                // their block files kept open at most
  benchNoChecksums?: boolean             // benchmark switch: local reads unchecked (vdisk/short-circuit-reads.ts)
  replicaHungMs?: number                 // a replica silent this long with I/O outstanding is hung (`--replica-hung-ms`)
  hooks?: AgentHooks
  logger?: Logger
}

// What higher layers (the relocation runner) hook into, without vdisk importing them.
export interface AgentHooks {
  attached?: (disk: VirtualDisk) => void
  detached?: (name: string) => void
  leaseAcquired?: (disk: VirtualDisk) => void
  leaseLost?: (name: string) => void
  // Another host asked for the lease of an open disk and this one hands it over.
  handoverRequested?: (name: string) => void
  // A replica of an open disk failed a write and was marked stale (code: why, e.g. NO_SPACE).
  replicaStale?: (disk: VirtualDisk, node: string, code: string) => void
  // The set of disks, or a disk's owner or mode, may have changed (the NBD sockets follow).
  disksChanged?: () => void
}

interface OpenDisk {
  disk: VirtualDisk
  handles: number
  writable: number
}

const FH_MAX = 0xffffffff
// Disks whose last handle closed stay cached with their placement map and its watches, so
// opening one again reads nothing from ZooKeeper — also while ZooKeeper is away (issue 9). A few
// KiB of map each (plus the watches); the least recently closed is dropped first.
const WARM_DISKS_MAX = 16
// An open waits this long for its open record in ZooKeeper, then lets it be created in the
// background (ZooKeeper going away just now must not fail the open).
const OPEN_RECORD_WAIT_MS = 2000

// A name under .snapshots that is no DISK@NAME simply does not exist (ENOENT, not EINVAL).
function snapshotFile (ref: string): SnapshotRef {
  try {
    return parseSnapshotRef(ref)
  } catch (err) {
    if (isUkaiError(err, 'BAD_ARGUMENT')) throw UkaiError.notFound(`no snapshot ${ref}`)
    throw err
  }
}

// fallocate(2) mode bits (linux/falloc.h).
const FALLOC_FL_KEEP_SIZE = 0x01
const FALLOC_FL_PUNCH_HOLE = 0x02
const FALLOC_FL_ZERO_RANGE = 0x10

export class Agent {
  readonly host: string
  readonly site: string
  readonly meta: MetaStore
  readonly pool: NodePool
  readonly leases: LeaseManager
  readonly localReads: LocalReads | undefined
  private readonly log: Logger
  private readonly mountPoint: string
  private records = new Map<string, VersionedDiskRecord>()
  // What a disk nobody chowned shows: this agent's own user, as the mount always did.
  readonly defaultOwner: DiskFileOwner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: 0o660 }
  private readonly open = new Map<string, OpenDisk>()
  private readonly warm = new Map<string, VirtualDisk>()
  // Disks whose last handle closed and which are still going idle (flush, lease and open record
  // let go). An open of the same disk waits for that first: otherwise its writes could run under
  // the lease the old release is about to give up, and its open record be dropped by it.
  private readonly detaching = new Map<string, Promise<void>>()
  private opening = new Map<string, Promise<OpenDisk>>()
  private readonly handles = new Map<number, { name: string, writable: boolean, image?: SnapshotImage, allocation?: AllocationSource }>()
  // Snapshots per disk, kept current through watches: the read-only `.snapshots` directory.
  private snapshots = new Map<string, SnapshotRecord[]>()
  // Disks whose record and snapshot list are watched. Not `records`: a disk also enters those
  // when made on this mount or stat'ed before the list watch fired, and was then never watched
  // (its snapshots never listed under .snapshots, its record never refreshed).
  private readonly watched = new Set<string>()
  // Bytes each disk really uses (st_blocks), cached; never waited for by getattr.
  private readonly usage: DiskUsage
  private nextFh = 1
  private readonly ioTotals = new Map<string, DiskIoCounters>()
  private closed = false
  private readonly ioRetryMs?: number
  private readonly flushBehindMs?: number
  private readonly hooks: AgentHooks
  private readonly freeLease: FreeLeaseFollower

  constructor (opts: AgentOptions) {
    this.ioRetryMs = opts.ioRetryMs
    this.flushBehindMs = opts.flushBehindMs
    this.hooks = opts.hooks ?? {}
    this.meta = opts.meta
    this.host = opts.host
    this.site = opts.site
    this.mountPoint = opts.mountPoint
    this.log = opts.logger ?? silentLogger
    this.pool = new NodePool(opts.meta, { host: opts.host, site: opts.site, logger: this.log, addressOverrides: opts.nodeAddresses, replicaHungMs: opts.replicaHungMs })
    this.localReads = opts.localReads === false ? undefined : new LocalReads({ pool: this.pool, openFilesMax: opts.localReadFiles, verifyChecksums: opts.benchNoChecksums !== true, logger: this.log })
    this.usage = new DiskUsage({ meta: opts.meta, pool: this.pool, logger: this.log })
    this.freeLease = new FreeLeaseFollower({
      meta: opts.meta,
      log: this.log,
      waiting: (name) => {
        const o = this.open.get(name)
        return o !== undefined && o.writable > 0 && this.leases.holding(name) === undefined && !this.closed ? o.disk : null
      }
    })
    this.leases = new LeaseManager(opts.meta, opts.host, {
      onHandoverRequested: (disk, requester) => {
        const o = this.open.get(disk)
        this.log.info({ disk, requester }, 'hand-over requested')
        this.hooks.handoverRequested?.(disk)
        this.hooks.leaseLost?.(disk)
        if (o !== undefined) o.disk.handOver().catch(err => this.log.error({ disk, err: String(err) }, 'hand-over failed'))
        else this.leases.release(disk).catch(safetyCatch)
      },
      onLost: (disk) => { this.hooks.leaseLost?.(disk); this.open.get(disk)?.disk.leaseLost() },
      onReasserted: (disk) => {
        const o = this.open.get(disk)
        if (o === undefined) return
        o.disk.leaseReasserted()
        this.hooks.leaseAcquired?.(o.disk)
      }
    }, { handoverTimeoutMs: opts.handoverTimeoutMs, logger: this.log })
  }

  // ready(): registered, the node and disk lists read and watched. close(): drains (every open
  // disk flushed and its lease given up). destroy(err): stops without flushing (open disks
  // destroyed: waiting I/O fails with err, leases let go). Both then close the node clients.
  private readonly life = new Lifecycle({
    open: async () => { await this.openNow() },
    drain: async () => { await this.drainDisks() },
    abort: async (err) => { await this.abortDisks(err) },
    release: async () => {
      await this.localReads?.close()
      await this.pool.close()
    }
  })

  ready (): Promise<void> { return this.life.ready() }
  close (): Promise<void> { return this.life.close() }
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }

  private async openNow (): Promise<void> {
    await this.meta.registerAgent({ v: 1, host: this.host, site: this.site, mountPoint: this.mountPoint }, { v: 1, startedAtMs: Date.now(), pid: process.pid })
    await this.pool.ready()
    await this.refreshDisks()
    // Watches die with an expired session: set them again on the new one.
    this.meta.onSession(() => {
      this.records.clear()
      this.watched.clear()
      this.refreshDisks().catch(err => this.log.error({ err: String(err) }, 'disk list refresh failed'))
      this.pool.refresh().catch(err => this.log.error({ err: String(err) }, 'node list refresh failed'))
      for (const disk of [...[...this.open.values()].map(o => o.disk), ...this.warm.values()]) disk.reload(true).catch(err => this.log.error({ err: String(err) }, 'disk reload failed'))
    })
  }

  // Keeps the name → record cache current through watches, so getattr never waits on ZooKeeper.
  private async refreshDisks (): Promise<void> {
    if (this.closed) return
    const names = await this.meta.listDiskNames(() => { this.refreshDisks().catch(safetyCatch) })
    const next = new Map<string, VersionedDiskRecord>()
    await Promise.all(names.map(async (name) => {
      const known = this.records.get(name)
      if (known !== undefined && this.watched.has(name)) { next.set(name, known); return }
      try {
        next.set(name, await this.meta.getDisk(name, () => { this.refreshDisk(name).catch(safetyCatch) }))
        await this.refreshSnapshots(name)
        this.watched.add(name)
      } catch (err) {
        if (!isUkaiError(err, 'NOT_FOUND')) throw err
      }
    }))
    this.records = next
    this.hooks.disksChanged?.()
    for (const name of this.snapshots.keys()) if (!next.has(name)) this.snapshots.delete(name)
    for (const name of this.watched) if (!next.has(name)) { this.watched.delete(name); this.usage.forget(name) }
    for (const name of this.warm.keys()) if (!next.has(name)) this.dropWarm(name)
  }

  private async refreshSnapshots (name: string): Promise<void> {
    if (this.closed) return
    try {
      this.snapshots.set(name, await this.meta.listSnapshots(name, () => { this.refreshSnapshots(name).catch(safetyCatch) }))
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
      this.snapshots.delete(name)
    }
  }

  private async refreshDisk (name: string): Promise<void> {
    if (this.closed) return
    try {
      this.noteRecord(await this.meta.getDisk(name, () => { this.refreshDisk(name).catch(safetyCatch) }))
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
      this.records.delete(name)
      this.dropWarm(name)
      this.hooks.disksChanged?.()
    }
  }

  // Keeps a disk whose last handle closed (see WARM_DISKS_MAX).
  private keepWarm (disk: VirtualDisk): void {
    if (this.closed) { disk.close().catch(safetyCatch); return }
    this.warm.delete(disk.name)
    this.warm.set(disk.name, disk)
    for (const name of this.warm.keys()) {
      if (this.warm.size <= WARM_DISKS_MAX) break
      this.dropWarm(name)
    }
  }

  private dropWarm (name: string): void {
    const disk = this.warm.get(name)
    if (disk === undefined) return
    this.warm.delete(name)
    disk.close().catch(err => this.log.warn({ disk: name, err: String(err) }, 'closing a cached disk failed'))
  }

  // The cached engine of `name`, if it is still the disk of that name (not deleted and created
  // again meanwhile: the uuid tells).
  private takeWarm (name: string): VirtualDisk | undefined {
    const disk = this.warm.get(name)
    if (disk === undefined) return undefined
    this.warm.delete(name)
    if (disk.record.uuid === this.records.get(name)?.uuid) return disk
    disk.close().catch(safetyCatch)
    return undefined
  }

  private ioCountersOf (name: string): DiskIoCounters {
    let c = this.ioTotals.get(name)
    if (c === undefined) { c = { readBytes: 0, writeBytes: 0, localReadBytes: 0 }; this.ioTotals.set(name, c) }
    return c
  }

  // Cumulative bytes per disk through this agent, for the published report.
  ioSnapshot (): Record<string, DiskIoCounters> {
    const out: Record<string, DiskIoCounters> = {}
    for (const [name, c] of this.ioTotals) if (this.records.has(name)) out[name] = { ...c }
    return out
  }

  listDisks (): string[] { return [...this.records.keys()].sort() }

  // A record read or written here: newer than the cached one wins (a watch-driven re-read and
  // our own update may arrive in either order).
  private noteRecord (rec: VersionedDiskRecord): void {
    const known = this.records.get(rec.name)
    if (known === undefined || known.version <= rec.version) this.records.set(rec.name, rec)
    this.open.get(rec.name)?.disk.adoptFileAttrs(rec)
    this.hooks.disksChanged?.()
  }

  // 'DISK@NAME' of every snapshot of every disk.
  listSnapshotFiles (): string[] {
    const out: string[] = []
    for (const [disk, snaps] of this.snapshots) if (this.records.has(disk)) for (const s of snaps) out.push(formatSnapshotRef({ disk, snapshot: s.name }))
    return out.sort()
  }

  async statSnapshot (ref: string): Promise<SnapshotRecord> {
    const { disk, snapshot } = snapshotFile(ref)
    const known = this.snapshots.get(disk)?.find(s => s.name === snapshot)
    return known ?? await this.meta.getSnapshot(disk, snapshot)
  }

  // Snapshots are read-only: opening one for write is EROFS.
  async openSnapshot (ref: string, writable: boolean): Promise<number> {
    const { disk, snapshot } = snapshotFile(ref)
    if (writable) throw new UkaiError('READ_ONLY', `snapshot ${ref} is read-only`)
    const image = await SnapshotImage.open(this.meta, this.pool, disk, snapshot, this.ioRetryMs)
    const fh = this.newFh()
    this.handles.set(fh, { name: ref, writable: false, image })
    return fh
  }

  private newFh (): number {
    if (this.handles.size >= FH_MAX - 1) throw UkaiError.busy('too many open handles')
    while (this.handles.has(this.nextFh)) this.nextFh = this.nextFh >= FH_MAX ? 1 : this.nextFh + 1
    return this.nextFh++
  }

  async stat (name: string): Promise<DiskRecord> {
    const o = this.open.get(name)
    if (o !== undefined) return o.disk.record
    const rec = this.records.get(name)
    if (rec !== undefined) return rec
    const fresh = await this.meta.getDisk(name) // created elsewhere a moment ago
    this.noteRecord(fresh)
    return fresh
  }

  // --- handles ------------------------------------------------------------------------------

  // takeFreeLeaseNow false (an NBD export, which may or may not be written): a free lease waits
  // for the first write, as before; a lease freed later is still taken (free-lease.ts).
  async openDisk (name: string, writable: boolean, opts: { takeFreeLeaseNow?: boolean } = {}): Promise<number> {
    validateDiskName(name)
    const o = await this.attach(name)
    o.handles++
    if (writable) o.writable++
    const fh = this.newFh()
    this.handles.set(fh, { name, writable })
    if (writable && this.leases.holding(name) === undefined && this.meta.isConnected) {
      // Opening for write takes a free lease now; a held one when its holder lets it go (a
      // migration's destination: free-lease.ts), or at our first write, whichever comes first.
      // Only an optimisation: while ZooKeeper is away the open does not wait for it (the write will).
      try {
        // The watch first, so a release between the look and the watch is not missed.
        await this.freeLease.follow(name, { now: false })
        if (opts.takeFreeLeaseNow !== false && !await this.meta.leaseHeldAnywhere(name)) await o.disk.ensureLease()
      } catch (err) {
        safetyCatch(err)
        this.log.warn({ disk: name, err: String(err) }, 'could not take the lease at open')
      }
    }
    return fh
  }

  private async attach (name: string): Promise<OpenDisk> {
    const o = this.open.get(name)
    if (o !== undefined) return o
    let p = this.opening.get(name)
    if (p === undefined) {
      p = (async () => {
        await this.detaching.get(name)?.catch(safetyCatch)
        const disk = this.takeWarm(name) ?? await VirtualDisk.open({ meta: this.meta, pool: this.pool, leases: this.leases, ioRetryMs: this.ioRetryMs, flushBehindMs: this.flushBehindMs, io: this.ioCountersOf(name), localReads: this.localReads, logger: this.log, onLeaseAcquired: d => this.hooks.leaseAcquired?.(d), onReplicaStale: (d, node, code) => this.hooks.replicaStale?.(d, node, code) }, name)
        const rec: OpenRecord = { v: 1, host: this.host, writable: true }
        await this.meta.holdOpenRecord(name, rec, { waitMs: OPEN_RECORD_WAIT_MS })
        const od = { disk, handles: 0, writable: 0 }
        this.open.set(name, od)
        this.hooks.attached?.(disk)
        return od
      })().finally(() => this.opening.delete(name))
      this.opening.set(name, p)
    }
    return await p
  }

  // Opens a disk with no file handle and takes its lease, for background work (a relocation
  // whose executor died); `done` tells when to let it go again.
  async adopt (name: string, done: (disk: VirtualDisk) => Promise<unknown>): Promise<void> {
    const o = await this.attach(name)
    o.handles++
    try {
      await o.disk.ensureLease()
      await done(o.disk)
    } finally {
      o.handles--
      if (o.handles === 0) {
        this.open.delete(name)
        this.hooks.detached?.(name)
        await o.disk.close().catch(safetyCatch)
        await this.meta.dropOpenRecord(name, this.host)
      }
    }
  }

  // What a read on the handle reads: a disk's head, or a snapshot image.
  reader (fh: number): { read: (offset: number, length: number) => Promise<Buffer> } {
    const image = this.handles.get(fh)?.image
    return image ?? this.disk(fh)
  }

  // Where the handle's file holds data (SEEK_DATA/SEEK_HOLE on the mount, NBD block status), per
  // disk block (vdisk/allocation.ts); one per handle, so a clone's ancestors are asked once.
  allocation (fh: number): AllocationSource {
    const h = this.handles.get(fh)
    if (h === undefined) throw UkaiError.notFound(`no open handle ${fh}`)
    h.allocation ??= h.image === undefined
      ? new HeadAllocation(this.pool, this.disk(fh))
      : new SnapshotAllocation(this.meta, this.pool, this.ioRetryMs ?? IO_RETRY_MS_DEFAULT, h.image.snapshot.disk, h.image.snapshot.epoch, h.image.snapshot.sizeBytes)
    return h.allocation
  }

  disk (fh: number): VirtualDisk {
    const h = this.handles.get(fh)
    if (h?.image !== undefined) throw new UkaiError('READ_ONLY', `snapshot ${h.name} is read-only`)
    const o = h === undefined ? undefined : this.open.get(h.name)
    if (o === undefined) throw UkaiError.notFound(`no open handle ${fh}`)
    return o.disk
  }

  async release (fh: number): Promise<void> {
    const h = this.handles.get(fh)
    if (h === undefined) return
    this.handles.delete(fh)
    if (h.image !== undefined) { await h.image.close(); return }
    const o = this.open.get(h.name)
    if (o === undefined) return
    o.handles--
    if (h.writable) o.writable--
    if (o.handles > 0) return
    this.open.delete(h.name)
    this.hooks.detached?.(h.name)
    const detached = this.detach(h.name, o.disk)
    this.detaching.set(h.name, detached)
    try {
      await detached
    } finally {
      if (this.detaching.get(h.name) === detached) this.detaching.delete(h.name)
    }
    if (h.writable) this.usage.refresh(o.disk.record).catch(safetyCatch) // written: blocks may have appeared
  }

  // What the disk really uses (written blocks × block size, disk-usage.ts), or null until known.
  allocatedBytes (rec: DiskRecord): number | null { return this.usage.allocatedBytes(rec) }

  private async detach (name: string, disk: VirtualDisk): Promise<void> {
    try {
      await disk.idle()
      this.keepWarm(disk)
    } catch (err) {
      await disk.close().catch(safetyCatch)
      throw err
    } finally {
      await this.meta.dropOpenRecord(name, this.host)
    }
  }

  // --- namespace ----------------------------------------------------------------------------

  // A file created on the mount is an empty disk placed at this agent's site; it grows by truncate.
  async create (name: string, mode: number): Promise<number> {
    validateDiskName(name)
    const rec = await createDisk(this.meta, { name, sizeBytes: 0, site: this.site, file: { ...this.defaultOwner, mode: mode & 0o7777 } })
    this.noteRecord({ ...rec, version: 0 })
    return await this.openDisk(name, true)
  }

  async truncate (name: string, sizeBytes: number): Promise<void> {
    const rec = await resizeDisk(this.meta, name, sizeBytes)
    // The record's new version arrives with the watch; until then the size is what counts.
    this.records.set(name, { ...rec, version: this.records.get(name)?.version ?? 0 })
    await this.open.get(name)?.disk.reload()
  }

  // --- owner, mode, extended attributes (in the disk record: the same on every mount) --------

  fileOwner (rec: DiskRecord): DiskFileOwner { return ownerOf(rec, this.defaultOwner) }

  async chown (name: string, uid: number, gid: number): Promise<void> {
    this.noteRecord(await updateDiskRecord(this.meta, name, rec => withOwner(rec, this.defaultOwner, uid, gid)))
  }

  async chmod (name: string, mode: number): Promise<void> {
    this.noteRecord(await updateDiskRecord(this.meta, name, rec => withMode(rec, this.defaultOwner, mode)))
  }

  // Served from the cached record: the kernel asks for security.capability before writes.
  async getxattr (name: string, attr: string): Promise<Buffer> {
    return getXattr(await this.stat(name), attr)
  }

  async listxattr (name: string): Promise<string[]> {
    return xattrNames(await this.stat(name))
  }

  async setxattr (name: string, attr: string, value: Buffer, flags: number): Promise<void> {
    this.noteRecord(await updateDiskRecord(this.meta, name, rec => withXattr(rec, attr, value, flags)))
  }

  async removexattr (name: string, attr: string): Promise<void> {
    this.noteRecord(await updateDiskRecord(this.meta, name, rec => withoutXattr(rec, attr)))
  }

  // fallocate(2) on an open disk. PUNCH_HOLE (guest TRIM through QEMU's discard) and ZERO_RANGE
  // both discard: the range reads as zeros and its space is freed on every replica (a thin disk
  // stays thin; ZERO_RANGE's promise to keep the range allocated is not kept, like any thin
  // store). Mode 0 reserves nothing (thin), so within the size it is a successful no-op; with
  // either mode a range past the end without KEEP_SIZE grows the disk, as on a local file.
  // COLLAPSE/INSERT/UNSHARE_RANGE are not supported (EOPNOTSUPP).
  async fallocate (fh: number, mode: number, offset: number, length: number): Promise<void> {
    const disk = this.disk(fh)
    if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) {
      throw UkaiError.notSupported(`fallocate mode 0x${mode.toString(16)} on ${disk.name}: only punch-hole, zero-range and plain allocation are supported`)
    }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      throw UkaiError.badArgument(`fallocate on ${disk.name}: bad range ${offset}+${length}`)
    }
    const grows = (mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) === 0 && offset + length > disk.sizeBytes
    if (grows) await this.truncate(disk.name, offset + length)
    if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) !== 0) await disk.discard(offset, length)
  }

  async unlink (name: string): Promise<void> {
    if (this.open.has(name)) throw UkaiError.busy(`disk '${name}' is open on this host`)
    this.dropWarm(name)
    await deleteDisk(this.meta, name, { logger: this.log })
    this.records.delete(name)
    this.hooks.disksChanged?.()
  }

  // Shutdown: I/O already taken runs unthrottled (VirtualDisk.liftQos).
  liftQos (): void { for (const o of this.open.values()) o.disk.liftQos() }

  // Drains: flush every open disk and give its lease up, then leave ZooKeeper's view.
  private async drainDisks (): Promise<void> {
    this.closed = true
    await Promise.all([...this.handles.values()].map(async h => { await h.image?.close() }))
    for (const [name, o] of this.open) {
      await o.disk.close().catch(err => this.log.error({ disk: name, err: String(err) }, 'close failed'))
    }
    this.open.clear()
    for (const name of [...this.warm.keys()]) this.dropWarm(name)
  }

  // Aborts: every open and cached disk destroyed (also one a draining close is flushing).
  private async abortDisks (err: Error): Promise<void> {
    this.closed = true
    await Promise.all([...this.handles.values()].map(async h => { await h.image?.close() }))
    const disks = [...[...this.open.values()].map(o => o.disk), ...this.warm.values()]
    this.open.clear()
    this.warm.clear()
    await Promise.all(disks.map(async d => {
      await d.destroy(err).catch(e => this.log.error({ disk: d.name, err: String(e) }, 'destroy failed'))
    }))
  }
}
