// Every fsync the block store does, in one place: a flush's version files and their checksum
// sidecars (fdatasyncAll, in at most SYNC_JOBS native calls), a directory's, one handle's — each
// counted (Stat reports `fsyncCount`, so tests can see a flush reach the node) and, for tests,
// made to fail. Separate from version-files.ts, which reads and writes the files through the same
// open-file cache: this is what makes them durable, and the fault that stands for a failing disk.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { FileCache, FileLease } from './file-cache'
import { sidecarPath } from './page-checksums'
import { errnoError, fdatasyncAll } from './pread-sums'

// A flush's fdatasyncs in this many native calls at most, run in parallel (libuv's pool has 4).
const SYNC_JOBS = 4

// Fault injection for tests (test/vdisk-fsync-faults.test.ts): when the node starts with this
// variable naming a path, every fsync fails with EIO while a file exists at that path. A real
// failing disk is what it stands for; the node's code from the failed fsync on is the real one.
export const FAULT_FSYNC_EIO_FILE_ENV = 'UKAI_FAULT_FSYNC_EIO_FILE'

export class FileSync {
  // fsync calls since start (Stat reports it), and the fault-injection switch (see above).
  private fsyncs = 0
  private readonly faultFsyncEioFile = process.env[FAULT_FSYNC_EIO_FILE_ENV]

  // isUnverified: a version file without a sidecar (older than checksums; version-files.ts).
  constructor (private readonly cache: FileCache, private readonly isUnverified: (file: string) => boolean) {}

  get fsyncCount (): number { return this.fsyncs }

  // Makes `files` durable, each with its checksums (a flush); a file deleted meanwhile needs no
  // sync (its directory's is the caller's). fdatasync: the bytes and what reading them back
  // needs (size, allocation), not the mtime — an overwrite of allocated pages costs no journal
  // commit for the inode. Versions and sidecars go to the pool in at most SYNC_JOBS native calls
  // (fdatasyncAll), in parallel: one FileHandle.datasync per file cost ~25–50 µs of CPU each
  // (a promise, a pool round trip) where the kernel's fdatasync costs ~5 (docs/performance.md).
  async fsyncFiles (files: string[]): Promise<void> {
    const leases: Array<{ lease: FileLease, file: string }> = []
    try {
      for (const file of files) {
        try {
          leases.push({ lease: this.cache.acquireOpen(file) ?? await this.cache.acquire(file), file })
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
          throw err
        }
        if (this.isUnverified(file)) continue
        const side = sidecarPath(file)
        try { leases.push({ lease: this.cache.acquireOpen(side) ?? await this.cache.acquire(side), file: side }) } catch { /* gone with its version */ }
      }
      for (let i = 0; i < leases.length; i++) this.countFsync()
      const jobs: number[][] = Array.from({ length: Math.min(SYNC_JOBS, leases.length) }, () => [])
      leases.forEach((l, i) => jobs[i % jobs.length].push(i))
      // allSettled: every job is done with its descriptors before the leases go (finally).
      const done = await Promise.allSettled(jobs.map(async job => {
        const errs = await fdatasyncAll(Int32Array.from(job, i => leases[i].lease.fh.fd))
        const bad = errs.findIndex(e => e !== 0)
        if (bad >= 0) throw errnoError(errs[bad], 'fdatasync', leases[job[bad]].file)
      }))
      for (const d of done) if (d.status === 'rejected') throw d.reason
    } finally {
      for (const l of leases) l.lease.release()
    }
  }

  async syncDir (dir: string): Promise<void> {
    const fh = await fsp.open(dir, 'r')
    try { await this.fsync(fh) } finally { await fh.close() }
  }

  async fsync (fh: { sync: () => Promise<void> }): Promise<void> {
    this.countFsync()
    await fh.sync()
  }

  async datasync (fh: { datasync: () => Promise<void> }): Promise<void> {
    this.countFsync()
    await fh.datasync()
  }

  // Every fsync-like call counts, and fails while the fault file exists (see above); also the
  // start-up syncfs of the data dir, which is not an fsync of one handle.
  countFsync (): void {
    this.fsyncs++
    if (this.faultFsyncEioFile !== undefined && fs.existsSync(this.faultFsyncEioFile)) {
      throw Object.assign(new Error(`EIO: i/o error, fsync (injected: ${this.faultFsyncEioFile} exists)`), { code: 'EIO' })
    }
  }
}
