// Block versions on local disk, keyed by (disk uuid, block index, epoch).
//
// Layout: DATA/disks/<uuid>/<block>.<epoch> as sparse files (only written ranges allocate), plus
// DATA/disks/<uuid>/fence holding the disk's minimum lease epoch. All metadata (which versions
// exist, allocated bytes per file, fence epochs) is scanned once at open and kept in memory, so
// the data path does no readdir/stat beyond one fstat per write for space accounting.
//
// Concurrency: overlapping writes/discards to one version apply in call order (RangeLocks);
// creating a version (empty or cloned) happens once per key, other writers wait for it.
//
// This class is the facade the server uses: it checks arguments, takes the range locks and the
// fence, and hands each concept to the piece that owns it:
//   disks.ts          the disks this node holds, in memory
//   versions.ts       versions and copy-on-write: which version file a read/write at an epoch uses
//   staged-version.ts a version that appears whole or not at all (a copy from a remote base)
//   fencing.ts        per-disk lease epochs, persisted
//   space.ts          space accounting: reservations, NO_SPACE, reconcile with st_blocks
//   disk-sync.ts      what a flush makes durable
//   version-gc.ts     disk, block and version garbage collection
//   startup-scan.ts   the data dir check, the start-up scan and sync
//   version-files.ts  the block file I/O: pread/pwrite/fsync of one version file, the file cache
import * as path from 'node:path'
import { UkaiError, safetyCatch } from '../errors'
import { BLOCK_SIZE_MAX_BYTES } from '../lib/limits'
import { Lifecycle } from '../lib/lifecycle'
import { RangeLocks } from '../lib/range-locks'
import { DiskSync } from './disk-sync'
import { DiskTable } from './disks'
import { Fencing } from './fencing'
import { pageSpan } from './page-checksums'
import { loadPunchHole } from './punch-hole'
import { preadSumsAddon } from './pread-sums'
import { SpaceAccount } from './space'
import { StagedVersion, VersionStaging } from './staged-version'
import { checkDataDir, scanDataDir, syncDataDir } from './startup-scan'
import { checkIndex, checkRange, checkUuid } from './store-checks'
import { storeErrorTranslator } from './store-errors'
import { VersionFiles } from './version-files'
import { VersionGc } from './version-gc'
import { BlockVersionInfo, CopyOnWrite, hasOrCreatesVersion, newestAtMost, versionPath } from './versions'
import { MAX_IO_BYTES } from './wire'

export type { StagedVersion } from './staged-version'
export type { BlockVersionInfo } from './versions'
export { FAULT_FSYNC_EIO_FILE_ENV } from './file-sync'
export { checkUuid } from './store-checks'

export interface BlockStoreOptions {
  nodeId: string
  dataDir: string
  capacityBytes?: number   // quota on allocated bytes; absent = the filesystem is the limit
  maxOpenFiles?: number
  checksums?: boolean      // false: the benchmark switch --bench-no-checksums (version-files.ts); default true
}

export interface BlockEpochList { block: number, epochs: number[] }
export interface StoreStat { nodeId: string, capacityBytes: number, usedBytes: number, freeBytes: number, fsyncCount: number }

export class BlockStore {
  readonly nodeId: string
  readonly dataDir: string
  readonly capacityBytes: number | undefined
  private readonly disks: DiskTable
  private readonly files: VersionFiles
  private readonly space: SpaceAccount
  private readonly fencing: Fencing
  private readonly versions: CopyOnWrite
  private readonly staging: VersionStaging
  private readonly sync: DiskSync
  private readonly gc: VersionGc
  private readonly locks = new RangeLocks()
  // How long the start-up sync of the data dir took, and how many version files it covered.
  startSyncMs = 0
  startSyncFiles = 0
  // close(): in-flight mutations finish, everything dirty is fsynced, files closed. destroy():
  // no fsync (the next start syncs the data dir, see startup-scan.ts); in-flight mutations (local
  // file calls) still settle before their files close.
  private readonly life = new Lifecycle({
    drain: async () => {
      this.stopAccepting()
      for (const disk of this.disks.values()) {
        await Promise.allSettled([...disk.inflight])
        await this.sync.flush(disk).catch(safetyCatch)
      }
    },
    abort: () => { this.stopAccepting() },
    release: async () => {
      for (const disk of this.disks.values()) await Promise.allSettled([...disk.inflight])
      await this.files.closeAll()
    }
  })

  private constructor (opts: BlockStoreOptions) {
    this.nodeId = opts.nodeId
    this.dataDir = path.resolve(opts.dataDir)
    this.capacityBytes = opts.capacityBytes
    const translate = storeErrorTranslator(this.nodeId, this.dataDir, this.capacityBytes)
    const files = this.files = new VersionFiles(translate, opts.maxOpenFiles, opts.checksums !== false)
    const space = this.space = new SpaceAccount(this.nodeId, this.capacityBytes)
    const syncDir = files.syncDir.bind(files)
    const disks = this.disks = new DiskTable(this.nodeId, path.join(this.dataDir, 'disks'), syncDir)
    const ensureDir = disks.ensureDir.bind(disks)
    const fencing = this.fencing = new Fencing({ nodeId: this.nodeId, ensureDir, fsync: files.fsync.bind(files), syncDir, translate })
    const versions = this.versions = new CopyOnWrite({ files, space, ensureDir, translate })
    this.staging = new VersionStaging({ fencing, ensureDir, files, space, translate })
    this.sync = new DiskSync(files, translate)
    this.gc = new VersionGc({ disks, versions, fencing, space, files, translate })
  }

  static async open (opts: BlockStoreOptions): Promise<BlockStore> {
    if (opts.capacityBytes !== undefined && !(Number.isSafeInteger(opts.capacityBytes) && opts.capacityBytes > 0)) {
      throw UkaiError.badArgument(`capacityBytes must be a positive integer, got ${opts.capacityBytes}`)
    }
    loadPunchHole()
    preadSumsAddon()
    const store = new BlockStore(opts)
    await checkDataDir(store.nodeId, store.dataDir, store.disks.disksDir)
    await scanDataDir(store.disks, store.space, file => store.files.markUnverified(file))
    const startMs = Date.now()
    await syncDataDir(store.nodeId, store.dataDir, () => store.files.countFsync())
    store.startSyncMs = Date.now() - startMs
    store.startSyncFiles = store.space.fileCount
    return store
  }

  // Allocated bytes; recent writes count at their worst case until the next reconcile.
  get usedBytes (): number { return this.space.usedBytes }
  get openFiles (): number { return this.files.openFiles }
  get fsyncCount (): number { return this.files.fsyncCount }
  // Version files accounted (every block version, after the start-up scan).
  get versionFiles (): number { return this.space.fileCount }
  // Checksums: versions older than them (no sidecar yet), and reads refused for a mismatch.
  get unverifiedVersions (): number { return this.files.unverifiedCount }
  get checksumErrors (): number { return this.files.checksumErrors }

  // ---- data path ----

  // With `absentNotFound`, a block with no version <= epoch is NOT_FOUND instead of zeros (a
  // clone's reader then asks the parent).
  async read (uuid: string, block: number, epoch: number, offset: number, length: number, absentNotFound = false): Promise<Buffer> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkRange(offset, length, MAX_IO_BYTES)
    const disk = this.disks.get(uuid)
    const found = disk === undefined ? undefined : newestAtMost(disk.versions.get(block), epoch)
    if (found === undefined && absentNotFound) throw UkaiError.notFound(`storage node ${this.nodeId}: block ${block} of ${uuid} has no version <= ${epoch}`)
    if (disk === undefined || found === undefined || length === 0) return Buffer.alloc(length)
    // A mismatch is checked again under the version's range lock: a write in flight to the same
    // page may have landed its bytes but not yet its checksum (version-files.ts).
    const { start, end } = pageSpan(offset, length)
    const recheck = async (again: () => Promise<Buffer>): Promise<Buffer> => await this.locks.run(`${uuid}/${block}.${found}`, start, end, again)
    return await this.files.read(versionPath(disk, block, found), offset, length, `read ${uuid} block ${block}.${found}`, recheck)
  }

  async write (uuid: string, block: number, epoch: number, offset: number, data: Buffer, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    checkRange(offset, data.length, MAX_IO_BYTES)
    const disk = this.disks.diskFor(uuid)
    const durable = this.fencing.admit(disk, leaseEpoch)
    const op = this.locks.run(`${uuid}/${block}.${epoch}`, offset, offset + data.length,
      async () => await this.versions.write(disk, block, epoch, offset, data))
    await this.fencing.track(disk, op)
    await durable
  }

  // Makes [offset, offset+length) of version `epoch` read as zeros and frees its space
  // (versions.ts: a whole version deleted or emptied, a tail truncated, a hole punched).
  async discard (uuid: string, block: number, epoch: number, offset: number, length: number, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    checkRange(offset, length, BLOCK_SIZE_MAX_BYTES)
    const disk = this.disks.diskFor(uuid)
    const durable = this.fencing.admit(disk, leaseEpoch)
    // Locks to the end of the block: truncation affects everything after offset.
    const op = this.locks.run(`${uuid}/${block}.${epoch}`, offset, BLOCK_SIZE_MAX_BYTES,
      async () => await this.versions.discard(disk, block, epoch, offset, length))
    await this.fencing.track(disk, op)
    await durable
  }

  // fsyncs every file of the disk written since the last flush, then the directory if entries changed.
  async flush (uuid: string, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    const disk = this.disks.diskFor(uuid)
    const durable = this.fencing.admit(disk, leaseEpoch)
    await this.sync.flush(disk)
    await durable
  }

  // Makes every version of `block` durable, and the disk directory's entries (disk-sync.ts).
  async syncBlock (uuid: string, block: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return
    await this.sync.syncBlock(disk, block)
  }

  // ---- control path ----

  // Raises the disk's minimum lease epoch (never lowers) and waits for mutations admitted under
  // older epochs to finish, so nothing from a fenced writer lands after this returns.
  async fence (uuid: string, leaseEpoch: number): Promise<number> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    return await this.fencing.fence(this.disks.diskFor(uuid), leaseEpoch)
  }

  async blockInfo (uuid: string, block: number): Promise<BlockVersionInfo[]> {
    checkUuid(uuid); checkIndex('block', block)
    return await this.versions.info(this.disks.get(uuid), block)
  }

  // The version read() would pick for (block, epoch), as a path relative to the data dir, for
  // agents on this host that read the file directly (short-circuit reads).
  locate (uuid: string, block: number, epoch: number): { found: boolean, epoch: number, path: string } {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch)
    const disk = this.disks.get(uuid)
    const found = disk === undefined ? undefined : newestAtMost(disk.versions.get(block), epoch)
    if (found === undefined) return { found: false, epoch: 0, path: '' }
    return { found: true, epoch: found, path: `disks/${uuid}/${block}.${found}` }  // = versionPath, relative
  }

  // The scrub's check of one version (version-files.ts check), under the range lock of all of
  // it: no write lands between its bytes and its sums meanwhile. null: the version is gone.
  async checkVersion (uuid: string, block: number, epoch: number): Promise<{ sizeBytes: number, badPage: number, adopted: boolean, digest: number } | null> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch)
    const disk = this.disks.get(uuid)
    if (disk === undefined || !(disk.versions.get(block)?.includes(epoch) ?? false)) return null
    return await this.locks.run(`${uuid}/${block}.${epoch}`, 0, BLOCK_SIZE_MAX_BYTES, async () => {
      if (!(disk.versions.get(block)?.includes(epoch) ?? false)) return null  // removed while we waited
      return await this.files.check(versionPath(disk, block, epoch), `scrub ${uuid} block ${block}.${epoch}`)
    })
  }

  // Every disk this node holds a version of.
  diskUuids (): string[] { return [...this.disks.values()].filter(d => d.versions.size > 0).map(d => d.uuid) }

  hasVersions (uuid: string, block: number): boolean {
    return (this.disks.get(uuid)?.versions.get(block)?.length ?? 0) > 0
  }

  listBlocks (uuid: string): BlockEpochList[] {
    checkUuid(uuid)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return []
    return [...disk.versions.entries()].sort((a, b) => a[0] - b[0]).map(([block, epochs]) => ({ block, epochs: [...epochs] }))
  }

  // Removes all versions of all blocks and the fence state (version-gc.ts).
  async deleteDisk (uuid: string): Promise<number> {
    checkUuid(uuid)
    return await this.gc.deleteDisk(uuid)
  }

  async deleteBlocks (uuid: string, blocks: number[]): Promise<number> {
    checkUuid(uuid)
    for (const b of blocks) checkIndex('block', b)
    return await this.gc.deleteBlocks(uuid, blocks)
  }

  // Drops every version no kept epoch needs (version-gc.ts); `leaseEpoch` > 0 is fenced like a write.
  async pruneVersions (uuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch = 0): Promise<{ freedBytes: number, versionsRemoved: number }> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    for (const k of keepEpochs) checkIndex('kept epoch', k)
    if (keepEpochs.length === 0) throw UkaiError.badArgument('pruneVersions needs at least one kept epoch (the head)')
    return await this.gc.pruneVersions(uuid, keepEpochs, dropNewer, leaseEpoch)
  }

  // Copy-on-write of a clone's block from a base disk on this node: if (uuid, block) has no
  // version, version `epoch` becomes a copy of the newest version <= baseEpoch of (baseUuid,
  // block). 'present' when the block had a version already, 'absent' when the base has none.
  async copyBase (uuid: string, block: number, epoch: number, baseUuid: string, baseEpoch: number, leaseEpoch: number): Promise<'present' | 'copied' | 'absent'> {
    checkUuid(uuid); checkUuid(baseUuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('base epoch', baseEpoch)
    const disk = this.disks.diskFor(uuid)
    const durable = this.fencing.admit(disk, leaseEpoch)
    if (hasOrCreatesVersion(disk, block)) return 'present'
    const base = this.disks.get(baseUuid)
    const from = base === undefined ? undefined : newestAtMost(base.versions.get(block), baseEpoch)
    if (base === undefined || from === undefined) return 'absent'
    const key = `${block}.${epoch}`
    const op = this.versions.copyFromBase(disk, base, block, epoch, from).finally(() => disk.creating.delete(key))
    disk.creating.set(key, op)
    await this.fencing.track(disk, op)
    await durable
    return 'copied'
  }

  // A version of a block that must appear whole or not at all (staged-version.ts).
  async stageVersion (uuid: string, block: number, epoch: number, leaseEpoch: number): Promise<StagedVersion> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    return await this.staging.stage(this.disks.diskFor(uuid), block, epoch, leaseEpoch)
  }

  async stat (): Promise<StoreStat> {
    const { capacityBytes, usedBytes, freeBytes } = await this.space.stat(this.dataDir)
    return { nodeId: this.nodeId, capacityBytes, usedBytes, freeBytes, fsyncCount: this.files.fsyncCount }
  }

  // Replaces the worst-case estimates of written files by their real allocation (space.ts).
  async reconcile (): Promise<void> { await this.space.reconcile() }

  // Waits for in-flight mutations, fsyncs everything dirty, closes all files. Idempotent.
  close (): Promise<void> { return this.life.close() }
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }

  private stopAccepting (): void {
    this.disks.close()
    this.space.stop()
  }
}
