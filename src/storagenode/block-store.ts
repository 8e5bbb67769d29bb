// Block versions on local disk, keyed by (disk uuid, block index, epoch).
//
// Layout: DATA/disks/<uuid>/<block>.<epoch> as sparse files (only written ranges allocate), plus
// DATA/disks/<uuid>/fence holding the disk's minimum lease epoch. All metadata (which versions
// exist, allocated bytes per file, fence epochs) is scanned once at open and kept in memory, so
// the data path does no readdir/stat beyond one fstat per write for space accounting.
//
// Concurrency: overlapping writes/discards to one version apply in call order (RangeLocks);
// creating a version (empty or cloned) happens once per key, other writers wait for it.
import { execFile } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { FileCache, MAX_OPEN_FILES_DEFAULT } from './file-cache'
import { loadPunchHole, punchHole } from './punch-hole'
import { RangeLocks } from '../lib/range-locks'
import { Lifecycle } from '../lib/lifecycle'
import { PAGE_BYTES, cloneSparse, writeAll, writeAllSync } from './sparse-copy'
import { MAX_IO_BYTES } from './wire'
import { BLOCK_SIZE_MAX_BYTES, SYNC_IO_MAX_BYTES } from '../lib/limits'

const ZERO_CHUNK_BYTES = 1024 * 1024
const RECONCILE_DELAY_MS = 200
// No path separators, no dots: a uuid can never name anything outside DATA/disks.
const DISK_UUID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/
const VERSION_FILE_RE = /^(\d+)\.(\d+)$/
const FENCE_FILE = 'fence'
// Bound on the start-up syncfs of the data dir, which writes back whatever a killed predecessor
// left dirty. Measured with 4,000 block files: 4-7 ms when clean (their scan takes 130-290 ms),
// 148 ms with 250 MiB of them never fsynced; GiBs of dirty data take seconds.
const START_SYNC_TIMEOUT_MS = 120_000

export interface BlockStoreOptions {
  nodeId: string
  dataDir: string
  capacityBytes?: number   // quota on allocated bytes; absent = the filesystem is the limit
  maxOpenFiles?: number
}

// A version built off to the side (a clone's block pulled from a base on another node): its
// bytes go to a temporary file, and only commit() gives it its name (see stageVersion).
export interface StagedVersion {
  write (offset: number, data: Buffer): Promise<void>
  // 'present' (and nothing installed) when the block got a version meanwhile.
  commit (): Promise<'present' | 'copied'>
  // Drops the temporary file; idempotent, and a no-op after commit().
  abort (): Promise<void>
}

export interface BlockVersionInfo { epoch: number, allocatedBytes: number, sizeBytes: number }
export interface BlockEpochList { block: number, epochs: number[] }
export interface StoreStat { nodeId: string, capacityBytes: number, usedBytes: number, freeBytes: number, fsyncCount: number }

// Fault injection for tests (test/vdisk-fsync-faults.test.ts): when the node starts with this
// variable naming a path, every fsync fails with EIO while a file exists at that path. A real
// failing disk is what it stands for; the node's code from the failed fsync on is the real one.
export const FAULT_FSYNC_EIO_FILE_ENV = 'UKAI_FAULT_FSYNC_EIO_FILE'

interface DiskState {
  uuid: string
  dir: string
  dirExists: boolean
  versions: Map<number, number[]>        // block → ascending epochs
  creating: Map<string, Promise<void>>   // '<block>.<epoch>' → version being created
  fenceEpoch: number                     // newest lease epoch seen (rejects anything older)
  fenceDurable: Promise<void>            // resolves once fenceEpoch is on disk
  dirty: Set<string>                     // files written since the last flush
  dirDirty: boolean                      // entries created/removed since the last flush
  syncing: Set<Promise<void>>            // flushes in progress
  inflight: Set<Promise<unknown>>        // admitted mutations (fence waits for them)
}

export class BlockStore {
  readonly nodeId: string
  readonly dataDir: string
  readonly capacityBytes: number | undefined
  private readonly disksDir: string
  private readonly disks = new Map<string, DiskState>()
  private readonly allocBytes = new Map<string, number>()  // file path → st_blocks*512
  private readonly files: FileCache
  private readonly locks = new RangeLocks()
  private usedBytesTotal = 0
  private canPunch = true     // false once the data dir's filesystem refused FALLOC_FL_PUNCH_HOLE
  private reservedBytes = 0   // worst-case allocation of writes in progress
  // Writes are accounted without an fstat on the data path: each adds its worst case (every page
  // it touched) here, per file, until reconcile() replaces the estimate with st_blocks. The quota
  // check reconciles before refusing, so the estimate only ever errs on the safe side.
  private readonly unsettledBytes = new Map<string, number>()
  // fsync calls since start (Stat reports it), and the fault-injection switch (see above).
  private fsyncCount = 0
  private readonly faultFsyncEioFile = process.env[FAULT_FSYNC_EIO_FILE_ENV]
  private unsettledTotal = 0
  private stagedCount = 0  // makes each staged version's temporary file name unique
  // How long the start-up sync of the data dir took, and how many version files it covered.
  startSyncMs = 0
  startSyncFiles = 0
  private reconciling: Promise<void> | undefined
  private reconcileTimer: NodeJS.Timeout | undefined
  private closed = false
  // close(): in-flight mutations finish, everything dirty is fsynced, files closed. destroy():
  // no fsync (the next start syncs the data dir, see syncDataDir); in-flight mutations (local
  // file calls) still settle before their files close.
  private readonly life = new Lifecycle({
    drain: async () => {
      this.stopAccepting()
      for (const disk of this.disks.values()) {
        await Promise.allSettled([...disk.inflight])
        await this.syncDisk(disk).catch(safetyCatch)
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
    this.disksDir = path.join(this.dataDir, 'disks')
    this.capacityBytes = opts.capacityBytes
    this.files = new FileCache(opts.maxOpenFiles ?? MAX_OPEN_FILES_DEFAULT)
  }

  static async open (opts: BlockStoreOptions): Promise<BlockStore> {
    if (opts.capacityBytes !== undefined && !(Number.isSafeInteger(opts.capacityBytes) && opts.capacityBytes > 0)) {
      throw UkaiError.badArgument(`capacityBytes must be a positive integer, got ${opts.capacityBytes}`)
    }
    loadPunchHole()
    const store = new BlockStore(opts)
    await store.checkDataDir()
    await store.scan()
    await store.syncDataDir()
    return store
  }

  // Allocated bytes; recent writes count at their worst case until the next reconcile.
  get usedBytes (): number { return this.usedBytesTotal + this.unsettledTotal }
  get openFiles (): number { return this.files.size }

  // ---- data path ----

  // With `absentNotFound`, a block with no version <= epoch is NOT_FOUND instead of zeros (a
  // clone's reader then asks the parent).
  async read (uuid: string, block: number, epoch: number, offset: number, length: number, absentNotFound = false): Promise<Buffer> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkRange(offset, length, MAX_IO_BYTES)
    const disk = this.disks.get(uuid)
    const found = disk === undefined ? undefined : newestAtMost(disk.versions.get(block), epoch)
    if (found === undefined && absentNotFound) throw UkaiError.notFound(`storage node ${this.nodeId}: block ${block} of ${uuid} has no version <= ${epoch}`)
    if (disk === undefined || found === undefined || length === 0) return Buffer.alloc(length)
    const lease = await this.files.acquire(versionPath(disk, block, found))
    try {
      const buf = Buffer.allocUnsafe(length)
      let got = 0
      if (length <= SYNC_IO_MAX_BYTES) {
        while (got < length) {
          const bytesRead = fs.readSync(lease.fh.fd, buf, got, length - got, offset + got)
          if (bytesRead === 0) break
          got += bytesRead
        }
      } else {
        while (got < length) {
          const { bytesRead } = await lease.fh.read(buf, got, length - got, offset + got)
          if (bytesRead === 0) break
          got += bytesRead
        }
      }
      if (got > length) throw UkaiError.internal(`read returned ${got} bytes for ${length} requested`)
      if (got < length) buf.fill(0, got)  // beyond the end of the version file reads as zeros
      return buf
    } catch (err) {
      throw this.translate(err, `read ${uuid} block ${block}`)
    } finally {
      lease.release()
    }
  }

  async write (uuid: string, block: number, epoch: number, offset: number, data: Buffer, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    checkRange(offset, data.length, MAX_IO_BYTES)
    const disk = this.diskFor(uuid)
    const durable = this.admit(disk, leaseEpoch)
    const op = this.locks.run(`${uuid}/${block}.${epoch}`, offset, offset + data.length,
      async () => await this.writeLocked(disk, block, epoch, offset, data))
    await this.track(disk, op)
    await durable
  }

  // Makes [offset, offset+length) of version `epoch` read as zeros and frees its space: the
  // whole version is deleted when nothing older would show through, or replaced by an empty
  // version when an older (committed) one would — that one is never touched; a range reaching
  // the end of the file truncates it; a range inside is a punched hole (zeros written where the
  // filesystem cannot punch).
  async discard (uuid: string, block: number, epoch: number, offset: number, length: number, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    checkRange(offset, length, BLOCK_SIZE_MAX_BYTES)
    const disk = this.diskFor(uuid)
    const durable = this.admit(disk, leaseEpoch)
    // Locks to the end of the block: truncation affects everything after offset.
    const op = this.locks.run(`${uuid}/${block}.${epoch}`, offset, BLOCK_SIZE_MAX_BYTES,
      async () => await this.discardLocked(disk, block, epoch, offset, length))
    await this.track(disk, op)
    await durable
  }

  // fsyncs every file of the disk written since the last flush, then the directory if entries changed.
  async flush (uuid: string, leaseEpoch: number): Promise<void> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    const disk = this.diskFor(uuid)
    const durable = this.admit(disk, leaseEpoch)
    await this.syncDisk(disk)
    await durable
  }

  // Makes every version of `block` durable, and the disk directory's entries (node-to-node
  // copies answer only after this: the executor marks a replica in sync, and later drops the
  // others, on the strength of the answer). One fsync per version file plus one of the directory:
  // a pull creates the version files, and a file not yet in the directory is lost with it.
  async syncBlock (uuid: string, block: number): Promise<void> {
    checkUuid(uuid); checkIndex('block', block)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return
    try {
      await Promise.all((disk.versions.get(block) ?? []).map(async epoch => await this.fsyncFile(versionPath(disk, block, epoch))))
      if (disk.dirExists) await this.syncDir(disk.dir)
    } catch (err) {
      throw this.translate(err, `sync ${uuid} block ${block}`)
    }
  }

  // ---- control path ----

  // Raises the disk's minimum lease epoch (never lowers) and waits for mutations admitted under
  // older epochs to finish, so nothing from a fenced writer lands after this returns.
  async fence (uuid: string, leaseEpoch: number): Promise<number> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    const disk = this.diskFor(uuid)
    if (leaseEpoch > disk.fenceEpoch) this.raiseFence(disk, leaseEpoch)
    await Promise.allSettled([...disk.inflight])
    await disk.fenceDurable
    return disk.fenceEpoch
  }

  async blockInfo (uuid: string, block: number): Promise<BlockVersionInfo[]> {
    checkUuid(uuid); checkIndex('block', block)
    const disk = this.disks.get(uuid)
    const epochs = disk?.versions.get(block) ?? []
    const out: BlockVersionInfo[] = []
    for (const epoch of epochs) {
      try {
        const st = await fsp.stat(versionPath(disk as DiskState, block, epoch))
        out.push({ epoch, allocatedBytes: st.blocks * 512, sizeBytes: st.size })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.translate(err, `stat ${uuid} block ${block}`)
      }
    }
    return out
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

  hasVersions (uuid: string, block: number): boolean {
    return (this.disks.get(uuid)?.versions.get(block)?.length ?? 0) > 0
  }

  listBlocks (uuid: string): BlockEpochList[] {
    checkUuid(uuid)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return []
    return [...disk.versions.entries()].sort((a, b) => a[0] - b[0]).map(([block, epochs]) => ({ block, epochs: [...epochs] }))
  }

  // Removes all versions of all blocks and the fence state. Callers stop writing first: a write
  // racing the delete may leave a file behind.
  async deleteDisk (uuid: string): Promise<number> {
    checkUuid(uuid)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return 0
    await Promise.allSettled([...disk.inflight, ...disk.creating.values()])
    await this.reconcile()  // so the freed count is real allocation, not estimates
    this.disks.delete(uuid)
    this.files.forgetUnder(disk.dir)
    let freed = 0
    for (const [p, n] of this.allocBytes) {
      if (p.startsWith(disk.dir + '/')) { freed += n; this.forgetAlloc(p) }
    }
    try {
      await fsp.rm(disk.dir, { recursive: true, force: true })
      await this.syncDir(this.disksDir)
    } catch (err) {
      throw this.translate(err, `delete disk ${uuid}`)
    }
    return freed
  }

  async deleteBlocks (uuid: string, blocks: number[]): Promise<number> {
    checkUuid(uuid)
    for (const b of blocks) checkIndex('block', b)
    const disk = this.disks.get(uuid)
    if (disk === undefined) return 0
    await this.reconcile()
    let freed = 0
    for (const block of blocks) {
      for (const epoch of [...(disk.versions.get(block) ?? [])]) freed += await this.removeVersion(disk, block, epoch)
    }
    if (freed > 0 || blocks.length > 0) await this.syncDir(disk.dir).catch(() => {})
    return freed
  }

  // Drops every version no kept epoch needs: version v of a block stays iff v is the newest
  // version <= k for some k in `keepEpochs`, or (unless `dropNewer`) v > max(keepEpochs) — a
  // write at a head newer than the caller knew. Versions being created are never touched.
  // `leaseEpoch` > 0 (a rollback, run under the disk's lease) is fenced like a write: a holder
  // that took the lease by force meanwhile stops it; 0 (garbage collection) is not.
  async pruneVersions (uuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch = 0): Promise<{ freedBytes: number, versionsRemoved: number }> {
    checkUuid(uuid); checkIndex('lease epoch', leaseEpoch)
    for (const k of keepEpochs) checkIndex('kept epoch', k)
    if (keepEpochs.length === 0) throw UkaiError.badArgument('pruneVersions needs at least one kept epoch (the head)')
    const disk = this.disks.get(uuid)
    if (disk === undefined) return { freedBytes: 0, versionsRemoved: 0 }
    if (leaseEpoch > 0) await this.admit(disk, leaseEpoch)
    await this.reconcile()  // so the freed count is real allocation, not estimates
    const maxKeep = Math.max(...keepEpochs)
    let freedBytes = 0
    let versionsRemoved = 0
    for (const [block, epochs] of [...disk.versions]) {
      const needed = new Set<number>()
      for (const k of keepEpochs) { const v = newestAtMost(epochs, k); if (v !== undefined) needed.add(v) }
      for (const v of [...epochs]) {
        if (needed.has(v) || (v > maxKeep && !dropNewer) || disk.creating.has(`${block}.${v}`)) continue
        freedBytes += await this.removeVersion(disk, block, v)
        versionsRemoved++
      }
    }
    if (versionsRemoved > 0) await this.syncDir(disk.dir).catch(() => {})
    return { freedBytes, versionsRemoved }
  }

  // Copy-on-write of a clone's block from a base disk on this node: if (uuid, block) has no
  // version, version `epoch` becomes a copy of the newest version <= baseEpoch of (baseUuid,
  // block). 'present' when the block had a version already, 'absent' when the base has none.
  async copyBase (uuid: string, block: number, epoch: number, baseUuid: string, baseEpoch: number, leaseEpoch: number): Promise<'present' | 'copied' | 'absent'> {
    checkUuid(uuid); checkUuid(baseUuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('base epoch', baseEpoch)
    const disk = this.diskFor(uuid)
    const durable = this.admit(disk, leaseEpoch)
    if ((disk.versions.get(block)?.length ?? 0) > 0 || disk.creating.size > 0 && [...disk.creating.keys()].some(k => k.startsWith(`${block}.`))) return 'present'
    const base = this.disks.get(baseUuid)
    const from = base === undefined ? undefined : newestAtMost(base.versions.get(block), baseEpoch)
    if (base === undefined || from === undefined) return 'absent'
    const key = `${block}.${epoch}`
    const op = (async () => {
      await this.ensureDiskDir(disk)
      const file = versionPath(disk, block, epoch)
      await this.copyVersionFile(versionPath(base, block, from), file, `copy ${baseUuid} block ${block}.${from} to clone ${uuid} epoch ${epoch}`)
      disk.dirty.add(file)
      disk.dirDirty = true
      insertSorted(disk.versions, block, epoch)
      // The copy's bytes were made durable before the rename; the entry now is too, so the
      // clone's block never reads as zeros after a crash where the base had data.
      try { await this.syncDir(disk.dir) } catch (err) { throw this.translate(err, `copy base into ${uuid} block ${block}`) }
    })().finally(() => disk.creating.delete(key))
    disk.creating.set(key, op)
    await this.track(disk, op)
    await durable
    return 'copied'
  }

  // A version of a block that must appear whole or not at all: a clone's block copied from a
  // base on another node (base-copy.ts), whose copy takes long enough (a far link, a 64 MiB
  // block) for a crash to cut it. Written through a temporary file; commit() fsyncs it, renames
  // it into place unless the block got a version meanwhile (a write of the clone raced the copy:
  // never overwritten), and fsyncs the directory — as a local clone (copyVersionFile) does. A
  // crash before the rename leaves only the temporary, removed at the next start (scan), so the
  // base still shows through; the version is never a mix of the base and missing bytes.
  async stageVersion (uuid: string, block: number, epoch: number, leaseEpoch: number): Promise<StagedVersion> {
    checkUuid(uuid); checkIndex('block', block); checkIndex('epoch', epoch); checkIndex('lease epoch', leaseEpoch)
    const disk = this.diskFor(uuid)
    await this.admit(disk, leaseEpoch)  // a fenced writer is refused before any byte moves
    const file = versionPath(disk, block, epoch)
    const tmp = `${file}.staged-${++this.stagedCount}.tmp`  // .tmp: removed at start (scan)
    const what = `copy into ${uuid} block ${block}.${epoch}`
    let fh: fsp.FileHandle
    try {
      await this.ensureDiskDir(disk)
      fh = await fsp.open(tmp, 'wx', 0o644)
    } catch (err) {
      throw this.translate(err, what)
    }
    let reservedBytes = 0
    let finished = false
    const finish = async (): Promise<void> => {
      if (finished) return
      finished = true
      this.reservedBytes -= reservedBytes
      await fh.close()
    }
    const abort = async (): Promise<void> => {
      if (finished) return
      try { await finish() } finally { await fsp.rm(tmp, { force: true }) }
    }
    const write = async (offset: number, data: Buffer): Promise<void> => {
      checkRange(offset, data.length, MAX_IO_BYTES)
      if (finished) throw UkaiError.internal(`${what}: write after commit or abort`)
      const worstCaseBytes = pagesSpanBytes(offset, data.length)
      await this.reserve(worstCaseBytes)
      reservedBytes += worstCaseBytes
      try { await writeAll(fh, data, offset) } catch (err) { throw this.translate(err, what) }
    }
    const commit = async (): Promise<'present' | 'copied'> => {
      if (finished) throw UkaiError.internal(`${what}: commit after commit or abort`)
      try {
        await this.fsync(fh)  // durable before it gets its name
      } catch (err) {
        await abort()
        throw this.translate(err, what)
      }
      // Checked and claimed in one turn of the loop: a write creating the version waits for it.
      const key = `${block}.${epoch}`
      const raced = (disk.versions.get(block)?.length ?? 0) > 0 || [...disk.creating.keys()].some(k => k.startsWith(`${block}.`))
      if (raced) { await abort(); return 'present' }
      let durable: Promise<void>
      try {
        durable = this.admit(disk, leaseEpoch)  // fenced meanwhile: the newer holder wins
      } catch (err) {
        await abort()
        throw err
      }
      const op = (async () => {
        try {
          await fsp.rename(tmp, file)
          this.setAlloc(file, (await fh.stat()).blocks * 512)
          insertSorted(disk.versions, block, epoch)
          disk.dirDirty = true  // if the sync below fails, the next flush tries again
          await this.syncDir(disk.dir)
        } catch (err) {
          throw this.translate(err, what)
        } finally {
          await finish().catch(safetyCatch)
          await fsp.rm(tmp, { force: true }).catch(safetyCatch)  // only when the rename failed
        }
      })().finally(() => disk.creating.delete(key))
      disk.creating.set(key, op)
      await this.track(disk, op)
      await durable
      return 'copied'
    }
    return { write, commit, abort }
  }

  async stat (): Promise<StoreStat> {
    await this.reconcile()
    const fsStat = await fsp.statfs(this.dataDir)
    const fsFreeBytes = fsStat.bavail * fsStat.bsize
    const fsTotalBytes = fsStat.blocks * fsStat.bsize
    const capacityBytes = this.capacityBytes ?? fsTotalBytes
    const quotaLeft = this.capacityBytes === undefined ? fsFreeBytes : Math.max(0, this.capacityBytes - this.usedBytes)
    return { nodeId: this.nodeId, capacityBytes, usedBytes: this.usedBytes, freeBytes: Math.min(quotaLeft, fsFreeBytes), fsyncCount: this.fsyncCount }
  }

  // Waits for in-flight mutations, fsyncs everything dirty, closes all files. Idempotent.
  close (): Promise<void> { return this.life.close() }
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }

  private stopAccepting (): void {
    this.closed = true
    if (this.reconcileTimer !== undefined) clearTimeout(this.reconcileTimer)
  }

  // ---- internals ----

  // Before the node serves: everything a previous incarnation wrote is made durable. A node
  // killed (-9) before an agent's fsync forgets which files were dirty, so that fsync would
  // succeed here without syncing them; the bytes are in the page cache, and a power loss before
  // writeback would lose them. syncfs(2) (coreutils `sync -f`; Node has no binding) writes back
  // the data dir's file system in one call and reports writeback errors (Linux >= 5.8); fsyncing
  // every block file would cost an open and an fsync per file, plus every directory, for the same
  // effect. Its price: other dirty data on the same file system is written back too.
  private async syncDataDir (): Promise<void> {
    const startMs = Date.now()
    try {
      this.fsyncCount++
      this.checkFaultFsync()
      await new Promise<void>((resolve, reject) => {
        execFile('sync', ['-f', this.dataDir], { timeout: START_SYNC_TIMEOUT_MS }, (err, _stdout, stderr) => {
          if (err === null) resolve()
          else reject(new Error(`sync -f ${this.dataDir}: ${stderr.trim() !== '' ? stderr.trim() : err.message}`))
        })
      })
    } catch (err) {
      throw new UkaiError('DATA_DIR', `storage node ${this.nodeId}: cannot make data dir ${this.dataDir} durable at start: ${(err as Error).message}`, err)
    }
    this.startSyncMs = Date.now() - startMs
    this.startSyncFiles = this.allocBytes.size
  }

  private async checkDataDir (): Promise<void> {
    const dir = this.dataDir
    try {
      const st = await fsp.stat(dir)
      if (!st.isDirectory()) throw new Error('not a directory')
      await fsp.mkdir(this.disksDir, { recursive: true })
      // access(W_OK) lies for root and read-only mounts; a real write does not.
      const probe = path.join(dir, `.probe-${process.pid}`)
      await fsp.writeFile(probe, 'ok')
      await fsp.unlink(probe)
    } catch (err) {
      throw new UkaiError('DATA_DIR', `storage node ${this.nodeId}: data dir ${dir} is missing or not writable: ${(err as Error).message}`, err)
    }
  }

  private async scan (): Promise<void> {
    for (const uuid of await fsp.readdir(this.disksDir)) {
      if (!DISK_UUID_RE.test(uuid)) continue
      const disk = this.newDisk(uuid)
      disk.dirExists = true
      for (const name of await fsp.readdir(disk.dir)) {
        const full = path.join(disk.dir, name)
        if (name.endsWith('.tmp')) { await fsp.rm(full, { force: true }); continue }  // an interrupted clone or fence write
        if (name === FENCE_FILE) {
          const epoch = Number((await fsp.readFile(full, 'utf8')).trim())
          if (!Number.isSafeInteger(epoch) || epoch < 0) throw new UkaiError('DATA_DIR', `corrupt fence file ${full}`)
          disk.fenceEpoch = epoch
          continue
        }
        const m = VERSION_FILE_RE.exec(name)
        if (m === null) continue
        const block = Number(m[1])
        const epoch = Number(m[2])
        const st = await fsp.stat(full)
        this.setAlloc(full, st.blocks * 512)
        insertSorted(disk.versions, block, epoch)
      }
      this.disks.set(uuid, disk)
    }
  }

  private newDisk (uuid: string): DiskState {
    return {
      uuid,
      dir: path.join(this.disksDir, uuid),
      dirExists: false,
      versions: new Map(),
      creating: new Map(),
      fenceEpoch: 0,
      fenceDurable: Promise.resolve(),
      dirty: new Set(),
      dirDirty: false,
      syncing: new Set(),
      inflight: new Set()
    }
  }

  private diskFor (uuid: string): DiskState {
    if (this.closed) throw UkaiError.unavailable(`storage node ${this.nodeId} is shutting down`)
    let disk = this.disks.get(uuid)
    if (disk === undefined) {
      disk = this.newDisk(uuid)
      this.disks.set(uuid, disk)
    }
    return disk
  }

  // Synchronous so the fence decision is made in arrival order. The returned promise resolves
  // when the epoch the op was admitted under is durable; ops await it before acknowledging.
  private admit (disk: DiskState, leaseEpoch: number): Promise<void> {
    if (leaseEpoch < disk.fenceEpoch) {
      throw UkaiError.fenced(`storage node ${this.nodeId}: disk ${disk.uuid}: lease epoch ${leaseEpoch} is older than ${disk.fenceEpoch}`)
    }
    if (leaseEpoch > disk.fenceEpoch) this.raiseFence(disk, leaseEpoch)
    return disk.fenceDurable
  }

  private raiseFence (disk: DiskState, leaseEpoch: number): void {
    disk.fenceEpoch = leaseEpoch
    // Chained so fence files are written in increasing order; a failed write does not block later ones.
    disk.fenceDurable = disk.fenceDurable.catch(() => {}).then(async () => await this.persistFence(disk, leaseEpoch))
  }

  private async persistFence (disk: DiskState, leaseEpoch: number): Promise<void> {
    try {
      await this.ensureDiskDir(disk)
      const file = path.join(disk.dir, FENCE_FILE)
      const tmp = file + '.tmp'
      const fh = await fsp.open(tmp, 'w', 0o644)
      try {
        await fh.writeFile(`${leaseEpoch}\n`)
        await this.fsync(fh)
      } finally {
        await fh.close()
      }
      await fsp.rename(tmp, file)
      await this.syncDir(disk.dir)
    } catch (err) {
      throw this.translate(err, `persist fence of disk ${disk.uuid}`)
    }
  }

  private async track<T> (disk: DiskState, op: Promise<T>): Promise<T> {
    disk.inflight.add(op)
    try {
      return await op
    } finally {
      disk.inflight.delete(op)
    }
  }

  private async writeLocked (disk: DiskState, block: number, epoch: number, offset: number, data: Buffer): Promise<void> {
    if (data.length === 0) return
    await this.ensureVersion(disk, block, epoch)
    const file = versionPath(disk, block, epoch)
    const worstCaseBytes = pagesSpanBytes(offset, data.length)
    // Invariants right before touching the disk.
    if (offset + data.length > BLOCK_SIZE_MAX_BYTES) throw UkaiError.internal(`write past max block size: ${offset}+${data.length}`)
    if (!(disk.versions.get(block)?.includes(epoch) ?? false)) throw UkaiError.internal(`version ${block}.${epoch} of ${disk.uuid} vanished`)
    await this.reserve(worstCaseBytes)
    try {
      const lease = await this.files.acquire(file)
      try {
        if (data.length <= SYNC_IO_MAX_BYTES) writeAllSync(lease.fh.fd, data, offset)
        else await writeAll(lease.fh, data, offset)
      } finally {
        lease.release()
      }
      this.addUnsettled(file, worstCaseBytes)
      disk.dirty.add(file)
    } catch (err) {
      this.addUnsettled(file, worstCaseBytes)  // a partial write may have allocated
      throw this.translate(err, `write ${disk.uuid} block ${block}.${epoch}`)
    } finally {
      this.reservedBytes -= worstCaseBytes
    }
  }

  private async discardLocked (disk: DiskState, block: number, epoch: number, offset: number, length: number): Promise<void> {
    if (length === 0) return
    const epochs = disk.versions.get(block)
    const visible = newestAtMost(epochs, epoch)
    if (visible === undefined) return  // nothing there: already zeros
    const older = newestAtMost(epochs, epoch - 1)
    try {
      const visibleSizeBytes = (await fsp.stat(versionPath(disk, block, visible))).size
      if (offset >= visibleSizeBytes) return  // past the end of the file: already zeros
      if (offset === 0 && length >= visibleSizeBytes) {
        // The whole version goes. Deleting it would expose an older one, so that case leaves an
        // empty version at this epoch instead (no clone: none of the old bytes are needed).
        if (visible === epoch) await this.removeVersion(disk, block, epoch)
        if (older !== undefined) await this.ensureVersion(disk, block, epoch, true)
        return
      }
      await this.ensureVersion(disk, block, epoch)
      const file = versionPath(disk, block, epoch)
      const lease = await this.files.acquire(file)
      try {
        const sizeBytes = (await lease.fh.stat()).size
        if (offset + length >= sizeBytes) {
          await lease.fh.truncate(offset)  // the tail reads as zeros again, and is freed
        } else if (!(this.canPunch && punchHole(lease.fh.fd, offset, length))) {
          this.canPunch = false  // learned once: this filesystem cannot punch holes
          const zeros = Buffer.alloc(Math.min(ZERO_CHUNK_BYTES, length))
          for (let pos = offset; pos < offset + length; pos += zeros.length) {
            await writeAll(lease.fh, zeros.subarray(0, Math.min(zeros.length, offset + length - pos)), pos)
          }
        }
        const st = await lease.fh.stat()
        this.setAlloc(file, st.blocks * 512)
        disk.dirty.add(file)
      } finally {
        lease.release()
      }
    } catch (err) {
      throw this.translate(err, `discard ${disk.uuid} block ${block}.${epoch}`)
    }
  }

  // Version `epoch` of `block` exists after this: created empty, or cloned from the newest older
  // version (copy-on-write; the older, committed version is never modified).
  // `empty`: create it empty even where an older version exists (a discard of the whole block).
  private async ensureVersion (disk: DiskState, block: number, epoch: number, empty = false): Promise<void> {
    if (disk.versions.get(block)?.includes(epoch) ?? false) return
    const key = `${block}.${epoch}`
    let pending = disk.creating.get(key)
    if (pending === undefined) {
      pending = this.createVersion(disk, block, epoch, empty).finally(() => disk.creating.delete(key))
      disk.creating.set(key, pending)
    }
    await pending
  }

  private async createVersion (disk: DiskState, block: number, epoch: number, empty: boolean): Promise<void> {
    await this.ensureDiskDir(disk)
    const file = versionPath(disk, block, epoch)
    const older = newestAtMost(disk.versions.get(block), epoch - 1)
    if (older === undefined || empty) {
      const lease = await this.files.acquire(file, true)
      lease.release()
      this.setAlloc(file, 0)
    } else {
      await this.copyVersionFile(versionPath(disk, block, older), file, `clone ${disk.uuid} block ${block}.${older} to epoch ${epoch}`)
      disk.dirty.add(file)
    }
    disk.dirDirty = true
    insertSorted(disk.versions, block, epoch)
  }

  // Copies a version file (sparse: holes stay holes) with its space reserved first, under a
  // temporary name so a crash never leaves a half-copied version behind.
  private async copyVersionFile (src: string, file: string, what: string): Promise<void> {
    const costBytes = (this.allocBytes.get(src) ?? 0) + (this.unsettledBytes.get(src) ?? 0)
    await this.reserve(costBytes)
    try {
      const tmp = file + '.tmp'
      await cloneSparse(src, tmp)
      // Durable before it gets its name: a version that exists after a crash must hold the older
      // version's bytes (reads pick it over that one); a crash before the rename leaves a .tmp,
      // removed at start, and the older version still shows through.
      const fh = await fsp.open(tmp, 'r+')
      try { await this.fsync(fh) } finally { await fh.close() }
      await fsp.rename(tmp, file)
      this.setAlloc(file, (await fsp.stat(file)).blocks * 512)
    } catch (err) {
      throw this.translate(err, what)
    } finally {
      this.reservedBytes -= costBytes
    }
  }

  private async removeVersion (disk: DiskState, block: number, epoch: number): Promise<number> {
    const file = versionPath(disk, block, epoch)
    const epochs = disk.versions.get(block)
    if (epochs !== undefined) {
      const i = epochs.indexOf(epoch)
      if (i >= 0) epochs.splice(i, 1)
      if (epochs.length === 0) disk.versions.delete(block)
    }
    this.files.forget(file)
    disk.dirty.delete(file)
    const freed = this.allocBytes.get(file) ?? 0
    this.forgetAlloc(file)
    try {
      await fsp.rm(file, { force: true })
    } catch (err) {
      throw this.translate(err, `delete ${disk.uuid} block ${block}.${epoch}`)
    }
    disk.dirDirty = true
    return freed
  }

  private async ensureDiskDir (disk: DiskState): Promise<void> {
    if (disk.dirExists) return
    await fsp.mkdir(disk.dir, { recursive: true })
    await this.syncDir(this.disksDir)  // the new disk directory itself must survive a crash
    disk.dirExists = true
  }

  // Files an earlier flush took off the dirty set may still be in its fsync: a flush waits for
  // those too, and fails with them, or it would call durable what is not yet.
  private async syncDisk (disk: DiskState): Promise<void> {
    const earlier = [...disk.syncing]
    const own = this.syncDirty(disk)
    disk.syncing.add(own)
    try { await own } finally { disk.syncing.delete(own) }
    await Promise.all(earlier)
  }

  private async syncDirty (disk: DiskState): Promise<void> {
    const files = [...disk.dirty]
    disk.dirty.clear()
    const dirDirty = disk.dirDirty
    disk.dirDirty = false
    try {
      await Promise.all(files.map(async f => await this.fsyncFile(f)))
      if (dirDirty) await this.syncDir(disk.dir)
    } catch (err) {
      // Not durable: keep them dirty so the next flush retries.
      for (const f of files) disk.dirty.add(f)
      if (dirDirty) disk.dirDirty = true
      throw this.translate(err, `flush disk ${disk.uuid}`)
    }
  }

  // A file deleted meanwhile needs no sync (its directory's is the caller's).
  private async fsyncFile (file: string): Promise<void> {
    let lease
    try {
      lease = await this.files.acquire(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    try { await this.fsync(lease.fh) } finally { lease.release() }
  }

  private async syncDir (dir: string): Promise<void> {
    const fh = await fsp.open(dir, 'r')
    try { await this.fsync(fh) } finally { await fh.close() }
  }

  private async fsync (fh: { sync: () => Promise<void> }): Promise<void> {
    this.fsyncCount++
    this.checkFaultFsync()
    await fh.sync()
  }

  private checkFaultFsync (): void {
    if (this.faultFsyncEioFile !== undefined && fs.existsSync(this.faultFsyncEioFile)) {
      throw Object.assign(new Error(`EIO: i/o error, fsync (injected: ${this.faultFsyncEioFile} exists)`), { code: 'EIO' })
    }
  }

  // Claims `bytes` of quota for an operation in progress, or throws NO_SPACE.
  private async reserve (bytes: number): Promise<void> {
    const fits = (): boolean => this.capacityBytes === undefined ||
      this.usedBytesTotal + this.unsettledTotal + this.reservedBytes + bytes <= this.capacityBytes
    if (!fits() && this.unsettledTotal > 0) await this.reconcile()
    if (!fits()) {
      throw UkaiError.noSpace(`storage node ${this.nodeId} is full: ${bytes} more bytes would exceed its capacity of ${this.capacityBytes} bytes (${this.usedBytesTotal} used)`)
    }
    this.reservedBytes += bytes
  }

  private addUnsettled (file: string, bytes: number): void {
    this.unsettledBytes.set(file, (this.unsettledBytes.get(file) ?? 0) + bytes)
    this.unsettledTotal += bytes
    if (this.reconcileTimer === undefined && !this.closed) {
      this.reconcileTimer = setTimeout(() => {
        this.reconcileTimer = undefined
        this.reconcile().catch(() => {})
      }, RECONCILE_DELAY_MS)
      this.reconcileTimer.unref()
    }
  }

  // Replaces the worst-case estimates of written files by their real allocation (st_blocks).
  async reconcile (): Promise<void> {
    while (this.reconciling !== undefined) await this.reconciling
    if (this.unsettledBytes.size === 0) return
    const batch = [...this.unsettledBytes]
    this.unsettledBytes.clear()
    this.reconciling = (async () => {
      for (const [file, estimate] of batch) {
        try {
          // Only files still known: a deleted version was already dropped from allocBytes.
          if (this.allocBytes.has(file)) this.setAlloc(file, (await fsp.stat(file)).blocks * 512)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
            this.unsettledBytes.set(file, (this.unsettledBytes.get(file) ?? 0) + estimate)
            continue
          }
        }
        this.unsettledTotal -= estimate
      }
    })()
    try { await this.reconciling } finally { this.reconciling = undefined }
  }

  private setAlloc (file: string, bytes: number): void {
    this.usedBytesTotal += bytes - (this.allocBytes.get(file) ?? 0)
    this.allocBytes.set(file, bytes)
  }

  private forgetAlloc (file: string): void {
    this.usedBytesTotal -= this.allocBytes.get(file) ?? 0
    this.allocBytes.delete(file)
    const unsettled = this.unsettledBytes.get(file)
    if (unsettled !== undefined) { this.unsettledTotal -= unsettled; this.unsettledBytes.delete(file) }
  }

  private translate (err: unknown, what: string): UkaiError {
    if (isUkaiError(err)) return err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return UkaiError.noSpace(`storage node ${this.nodeId}: ${what}: data dir ${this.dataDir} is out of space (${code}; capacity ${this.capacityBytes ?? 'filesystem'} bytes)`)
    }
    return UkaiError.io(`storage node ${this.nodeId}: ${what}: ${(err as Error).message}`, err)
  }
}

function versionPath (disk: DiskState, block: number, epoch: number): string {
  return `${disk.dir}/${block}.${epoch}`
}

function newestAtMost (epochs: number[] | undefined, epoch: number): number | undefined {
  if (epochs === undefined) return undefined
  for (let i = epochs.length - 1; i >= 0; i--) if (epochs[i] <= epoch) return epochs[i]
  return undefined
}

function insertSorted (versions: Map<number, number[]>, block: number, epoch: number): void {
  let epochs = versions.get(block)
  if (epochs === undefined) { epochs = []; versions.set(block, epochs) }
  if (epochs.includes(epoch)) return
  epochs.push(epoch)
  epochs.sort((a, b) => a - b)
}

// Upper bound of what a write can newly allocate: every page it touches.
function pagesSpanBytes (offset: number, length: number): number {
  const first = Math.floor(offset / PAGE_BYTES)
  const last = Math.floor((offset + length - 1) / PAGE_BYTES)
  return (last - first + 1) * PAGE_BYTES
}

export function checkUuid (uuid: string): void {
  if (typeof uuid !== 'string' || !DISK_UUID_RE.test(uuid)) {
    throw UkaiError.badArgument(`bad disk uuid '${String(uuid).slice(0, 80)}': expected 1-128 letters, digits, '-' or '_'`)
  }
}

function checkIndex (what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw UkaiError.badArgument(`bad ${what} ${n}: expected a non-negative integer`)
}

function checkRange (offset: number, length: number, maxLength: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw UkaiError.badArgument(`bad offset ${offset}`)
  if (!Number.isSafeInteger(length) || length < 0) throw UkaiError.badArgument(`bad length ${length}`)
  if (length > maxLength) throw UkaiError.badArgument(`length ${length} exceeds the limit of ${maxLength} bytes per request`)
  if (offset + length > BLOCK_SIZE_MAX_BYTES) throw UkaiError.badArgument(`range ${offset}+${length} exceeds the maximum block size of ${BLOCK_SIZE_MAX_BYTES} bytes`)
}
