// The hypervisor agent's view of the cluster: every disk as a file, open handles, and the disk
// engines behind them. The FUSE adapter and the NBD exports call only this class.
//
// What it owns itself: the open engines (one per disk, shared by every handle and NBD
// connection) and the file handles on them — open, attach, release, detach — and the lifecycle.
// Each other concept has its file: what the mount lists (disk-catalog.ts), closed disks kept
// warm (warm-disks.ts), the leases of open disks (disk-leases.ts), st_blocks (disk-usage.ts),
// owner, mode and xattrs (disk-file-attrs.ts), fallocate's modes (fallocate.ts).
import { UkaiError, safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { LeaseManager } from '../meta/lease'
import { DiskFileOwner, DiskIoCounters, DiskRecord, OpenRecord, SnapshotRecord, validateDiskName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { createDisk, deleteDisk, resizeDisk } from '../admin/disk-admin'
import { AgentHooks } from './agent-hooks'
import { DiskCatalog, snapshotFile } from './disk-catalog'
import { DiskLeases } from './disk-leases'
import { DiskUsage } from './disk-usage'
import { fallocateDisk } from './fallocate'
import { getXattr, ownerOf, updateDiskRecord, withMode, withOwner, withXattr, withoutXattr, xattrNames } from './disk-file-attrs'
import { WarmDisks } from './warm-disks'
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

interface OpenDisk {
  disk: VirtualDisk
  handles: number
  writable: number
}

const FH_MAX = 0xffffffff
// An open waits this long for its open record in ZooKeeper, then lets it be created in the
// background (ZooKeeper going away just now must not fail the open).
const OPEN_RECORD_WAIT_MS = 2000

export class Agent {
  readonly host: string
  readonly site: string
  readonly meta: MetaStore
  readonly pool: NodePool
  readonly leases: LeaseManager
  readonly localReads: LocalReads | undefined
  private readonly log: Logger
  private readonly mountPoint: string
  // What a disk nobody chowned shows: this agent's own user, as the mount always did.
  readonly defaultOwner: DiskFileOwner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: 0o660 }
  private readonly open = new Map<string, OpenDisk>()
  private readonly warm: WarmDisks
  // Disks whose last handle closed and which are still going idle (flush, lease and open record
  // let go). An open of the same disk waits for that first: otherwise its writes could run under
  // the lease the old release is about to give up, and its open record be dropped by it.
  private readonly detaching = new Map<string, Promise<void>>()
  private opening = new Map<string, Promise<OpenDisk>>()
  private readonly handles = new Map<number, { name: string, writable: boolean, image?: SnapshotImage, allocation?: AllocationSource }>()
  private readonly catalog: DiskCatalog
  // Bytes each disk really uses (st_blocks), cached; never waited for by getattr.
  private readonly usage: DiskUsage
  private nextFh = 1
  private readonly ioTotals = new Map<string, DiskIoCounters>()
  private closed = false
  private readonly ioRetryMs?: number
  private readonly flushBehindMs?: number
  private readonly hooks: AgentHooks
  private readonly diskLeases: DiskLeases

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
    this.warm = new WarmDisks({ log: this.log, closed: () => this.closed })
    this.catalog = new DiskCatalog({
      meta: opts.meta,
      usage: this.usage,
      warm: this.warm,
      closed: () => this.closed,
      noted: (rec) => { this.open.get(rec.name)?.disk.adoptFileAttrs(rec) },
      changed: () => { this.hooks.disksChanged?.() }
    })
    this.diskLeases = new DiskLeases({
      meta: opts.meta,
      host: opts.host,
      log: this.log,
      hooks: this.hooks,
      opened: (name) => this.open.get(name),
      closed: () => this.closed,
      handoverTimeoutMs: opts.handoverTimeoutMs
    })
    this.leases = this.diskLeases.manager
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
    await this.catalog.refresh()
    // Watches die with an expired session: set them again on the new one.
    this.meta.onSession(() => {
      this.catalog.rewatch().catch(err => this.log.error({ err: String(err) }, 'disk list refresh failed'))
      this.pool.refresh().catch(err => this.log.error({ err: String(err) }, 'node list refresh failed'))
      for (const disk of [...[...this.open.values()].map(o => o.disk), ...this.warm.all()]) disk.reload(true).catch(err => this.log.error({ err: String(err) }, 'disk reload failed'))
    })
  }

  private ioCountersOf (name: string): DiskIoCounters {
    let c = this.ioTotals.get(name)
    if (c === undefined) { c = { readBytes: 0, writeBytes: 0, localReadBytes: 0 }; this.ioTotals.set(name, c) }
    return c
  }

  // Cumulative bytes per disk through this agent, for the published report.
  ioSnapshot (): Record<string, DiskIoCounters> {
    const out: Record<string, DiskIoCounters> = {}
    for (const [name, c] of this.ioTotals) if (this.catalog.has(name)) out[name] = { ...c }
    return out
  }

  listDisks (): string[] { return this.catalog.names() }

  // 'DISK@NAME' of every snapshot of every disk.
  listSnapshotFiles (): string[] { return this.catalog.snapshotFiles() }

  async statSnapshot (ref: string): Promise<SnapshotRecord> { return await this.catalog.statSnapshot(ref) }

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
    return await this.catalog.lookup(name)
  }

  // --- handles ------------------------------------------------------------------------------

  // takeFreeLeaseNow false: an NBD export, which may or may not be written (disk-leases.ts).
  async openDisk (name: string, writable: boolean, opts: { takeFreeLeaseNow?: boolean } = {}): Promise<number> {
    validateDiskName(name)
    const o = await this.attach(name)
    o.handles++
    if (writable) o.writable++
    const fh = this.newFh()
    this.handles.set(fh, { name, writable })
    if (writable) await this.diskLeases.openedForWrite(name, o.disk, opts.takeFreeLeaseNow !== false)
    return fh
  }

  private async attach (name: string): Promise<OpenDisk> {
    const o = this.open.get(name)
    if (o !== undefined) return o
    let p = this.opening.get(name)
    if (p === undefined) {
      p = (async () => {
        await this.detaching.get(name)?.catch(safetyCatch)
        const disk = this.warm.take(name, this.catalog.get(name)?.uuid) ?? await VirtualDisk.open({ meta: this.meta, pool: this.pool, leases: this.leases, ioRetryMs: this.ioRetryMs, flushBehindMs: this.flushBehindMs, io: this.ioCountersOf(name), localReads: this.localReads, logger: this.log, onLeaseAcquired: d => this.hooks.leaseAcquired?.(d), onReplicaStale: (d, node, code) => this.hooks.replicaStale?.(d, node, code) }, name)
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
      this.warm.keep(disk)
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
    this.catalog.note({ ...rec, version: 0 })
    return await this.openDisk(name, true)
  }

  async truncate (name: string, sizeBytes: number): Promise<void> {
    this.catalog.noteResize(await resizeDisk(this.meta, name, sizeBytes))
    await this.open.get(name)?.disk.reload()
  }

  // --- owner, mode, extended attributes (in the disk record: the same on every mount) --------

  fileOwner (rec: DiskRecord): DiskFileOwner { return ownerOf(rec, this.defaultOwner) }

  async chown (name: string, uid: number, gid: number): Promise<void> {
    this.catalog.note(await updateDiskRecord(this.meta, name, rec => withOwner(rec, this.defaultOwner, uid, gid)))
  }

  async chmod (name: string, mode: number): Promise<void> {
    this.catalog.note(await updateDiskRecord(this.meta, name, rec => withMode(rec, this.defaultOwner, mode)))
  }

  // Served from the cached record: the kernel asks for security.capability before writes.
  async getxattr (name: string, attr: string): Promise<Buffer> {
    return getXattr(await this.stat(name), attr)
  }

  async listxattr (name: string): Promise<string[]> {
    return xattrNames(await this.stat(name))
  }

  async setxattr (name: string, attr: string, value: Buffer, flags: number): Promise<void> {
    this.catalog.note(await updateDiskRecord(this.meta, name, rec => withXattr(rec, attr, value, flags)))
  }

  async removexattr (name: string, attr: string): Promise<void> {
    this.catalog.note(await updateDiskRecord(this.meta, name, rec => withoutXattr(rec, attr)))
  }

  // fallocate(2) on an open disk: guest TRIM (fallocate.ts).
  async fallocate (fh: number, mode: number, offset: number, length: number): Promise<void> {
    const disk = this.disk(fh)
    await fallocateDisk(disk, async (sizeBytes) => { await this.truncate(disk.name, sizeBytes) }, mode, offset, length)
  }

  async unlink (name: string): Promise<void> {
    if (this.open.has(name)) throw UkaiError.busy(`disk '${name}' is open on this host`)
    this.warm.drop(name)
    await deleteDisk(this.meta, name, { logger: this.log })
    this.catalog.forget(name)
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
    this.warm.dropAll()
  }

  // Aborts: every open and cached disk destroyed (also one a draining close is flushing).
  private async abortDisks (err: Error): Promise<void> {
    this.closed = true
    await Promise.all([...this.handles.values()].map(async h => { await h.image?.close() }))
    const disks = [...[...this.open.values()].map(o => o.disk), ...this.warm.all()]
    this.open.clear()
    this.warm.clear()
    await Promise.all(disks.map(async d => {
      await d.destroy(err).catch(e => this.log.error({ disk: d.name, err: String(e) }, 'destroy failed'))
    }))
  }
}
