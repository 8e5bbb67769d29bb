// The block file I/O: pread/pwrite of one version file (DATA/disks/<uuid>/<block>.<epoch>)
// through the bounded cache of open handles (file-cache.ts), so the data path never opens or
// closes a file per I/O; making a range of one read as zeros (truncate, punch, or zeros
// written); and every fsync the store does — counted (Stat reports `fsyncCount`, so tests can see
// a flush reach the node) and, for tests, made to fail.
//
// Transfers up to SYNC_IO_MAX_BYTES (src/lib/limits.ts, where the measurement is) call
// pread/pwrite on the event loop: the thread pool's round trip costs more than a 4 KiB I/O that
// hits the page cache. fsync, clone and larger transfers stay on the pool.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { UkaiError } from '../errors'
import { SYNC_IO_MAX_BYTES } from '../lib/limits'
import { FileCache, MAX_OPEN_FILES_DEFAULT } from './file-cache'
import { punchHole } from './punch-hole'
import type { TranslateError } from './store-errors'

// The filesystem page: the unit of allocation in a block file (space accounting's worst case,
// the thin copies' zero-page test).
export const PAGE_BYTES = 4096
const ZERO_CHUNK_BYTES = 1024 * 1024

// Fault injection for tests (test/vdisk-fsync-faults.test.ts): when the node starts with this
// variable naming a path, every fsync fails with EIO while a file exists at that path. A real
// failing disk is what it stands for; the node's code from the failed fsync on is the real one.
export const FAULT_FSYNC_EIO_FILE_ENV = 'UKAI_FAULT_FSYNC_EIO_FILE'

export class VersionFiles {
  private readonly cache: FileCache
  private canPunch = true     // false once the data dir's filesystem refused FALLOC_FL_PUNCH_HOLE
  // fsync calls since start (Stat reports it), and the fault-injection switch (see above).
  private fsyncs = 0
  private readonly faultFsyncEioFile = process.env[FAULT_FSYNC_EIO_FILE_ENV]

  constructor (private readonly translate: TranslateError, maxOpenFiles = MAX_OPEN_FILES_DEFAULT) {
    this.cache = new FileCache(maxOpenFiles)
  }

  get openFiles (): number { return this.cache.size }
  get fsyncCount (): number { return this.fsyncs }

  // [offset, offset+length) of `file`; beyond the end of the file reads as zeros.
  async read (file: string, offset: number, length: number, what: string): Promise<Buffer> {
    const lease = await this.cache.acquire(file)
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
      throw this.translate(err, what)
    } finally {
      lease.release()
    }
  }

  // The final write of a block's bytes into its version file (which must exist).
  async write (file: string, offset: number, data: Buffer): Promise<void> {
    const lease = await this.cache.acquire(file)
    try {
      if (data.length <= SYNC_IO_MAX_BYTES) writeAllSync(lease.fh.fd, data, offset)
      else await writeAll(lease.fh, data, offset)
    } finally {
      lease.release()
    }
  }

  // Creates `file` empty, if it does not exist.
  async create (file: string): Promise<void> {
    const lease = await this.cache.acquire(file, true)
    lease.release()
  }

  // Makes [offset, offset+length) of `file` read as zeros and frees its space: a range reaching
  // the end of the file truncates it; a range inside is a punched hole (zeros written where the
  // filesystem cannot punch). Answers the file's allocation afterwards (st_blocks * 512).
  async zeroRange (file: string, offset: number, length: number): Promise<number> {
    const lease = await this.cache.acquire(file)
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
      return st.blocks * 512
    } finally {
      lease.release()
    }
  }

  // A file deleted meanwhile needs no sync (its directory's is the caller's).
  async fsyncFile (file: string): Promise<void> {
    let lease
    try {
      lease = await this.cache.acquire(file)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    try { await this.fsync(lease.fh) } finally { lease.release() }
  }

  async syncDir (dir: string): Promise<void> {
    const fh = await fsp.open(dir, 'r')
    try { await this.fsync(fh) } finally { await fh.close() }
  }

  async fsync (fh: { sync: () => Promise<void> }): Promise<void> {
    this.countFsync()
    await fh.sync()
  }

  // Every fsync-like call counts, and fails while the fault file exists (see above); also the
  // start-up syncfs of the data dir, which is not an fsync of one handle.
  countFsync (): void {
    this.fsyncs++
    if (this.faultFsyncEioFile !== undefined && fs.existsSync(this.faultFsyncEioFile)) {
      throw Object.assign(new Error(`EIO: i/o error, fsync (injected: ${this.faultFsyncEioFile} exists)`), { code: 'EIO' })
    }
  }

  // Forget a path (deleted or renamed over); its handle closes once unused.
  forget (file: string): void { this.cache.forget(file) }
  forgetUnder (dir: string): void { this.cache.forgetUnder(dir) }
  async closeAll (): Promise<void> { await this.cache.closeAll() }
}

export async function allocatedBytesOf (file: string): Promise<number> {
  return (await fsp.stat(file)).blocks * 512
}

export async function writeAll (fh: fsp.FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done)
    done += bytesWritten
  }
}

export function writeAllSync (fd: number, data: Buffer, position: number): void {
  let done = 0
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position + done)
}
