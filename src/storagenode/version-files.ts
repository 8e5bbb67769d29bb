// The block file I/O: pread/pwrite of one version file (DATA/disks/<uuid>/<block>.<epoch>)
// through the bounded cache of open handles (file-cache.ts), so the data path never opens or
// closes a file per I/O; making a range of one read as zeros (truncate, punch, or zeros
// written); and every fsync the store does, through file-sync.ts (counted, and for tests made
// to fail).
//
// Every version file has a checksum sidecar (page-checksums.ts): written here with every write,
// zeroed range and creation, checked here on every read. A mismatch is re-checked once under the
// caller's range lock (a read racing a write of the same page may see the new bytes with the old
// sum; the lock orders them) before it is reported as CHECKSUM: rotten bytes are never served.
// A version without a sidecar (written before checksums existed) is "unverified": served as is,
// until the scrub computes its sidecar (adopt()).
//
// Benchmark switch (`ukai storagenode --bench-no-checksums`, bench/ab-cost.ts only): with
// `checksums` false every version this node creates or stages is unverified, exactly as a
// pre-upgrade version — no sidecar is written, reads are served unchecked, the scrub is off. It
// exists to measure what checksums cost (on vs off in one run); never a default, never in dev up.
//
// The sums of hot versions are kept in memory (sums-cache.ts), written through: a node's 4 KiB
// read costs ~2.5 µs of CPU more than without checksums (7.0 vs 4.5 µs, in-process, one read at
// a time) where it cost ~6 µs with a pread of the sidecar per read; a write: below. The fio
// figures: docs/architecture.md "Checksums and scrub", docs/performance.md.
//
// A page-aligned write up to SYNC_IO_MAX_BYTES (the guest's 4 KiB random write) is one native
// call (writeWholePages): pwrite of the bytes, their crc32c, pwrite of the sidecar's entries;
// open handles leased without an await. In process (session 9, 256 files, paced 4 KiB writes):
// +4–12 µs CPU per write over no checksums before (a JS pwrite, a crc call, two allocations, an
// event-loop turn for the sidecar's handle), +0.5–2.5 µs with it. Crash safety as before: bytes
// first, their sums right after (now with no event-loop turn between), so a process killed in
// between leaves an old sum — a CHECKSUM mismatch, never served, never sums ahead of bytes; the
// next flush fdatasyncs version and sidecar (fsyncFile) before it answers.
//
// A checked read gets its pages' sums from the read itself (pread-sums.ts: pread + crc32c in one
// native call, on the thread pool above SYNC_IO_MAX_BYTES), then compares them with the stored
// ones (a memcmp): the crc of a 1 MiB read no longer occupies the event loop.
//
// Transfers up to SYNC_IO_MAX_BYTES (src/lib/limits.ts, where the measurement is) call
// pread/pwrite on the event loop: the thread pool's round trip costs more than a 4 KiB I/O that
// hits the page cache. fsync, clone and larger transfers stay on the pool.
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import { crc32c } from '@node-rs/crc32'
import { UkaiError } from '../errors'
import { SYNC_IO_MAX_BYTES } from '../lib/limits'
import { FileCache, FileLease, MAX_OPEN_FILES_DEFAULT } from './file-cache'
import { FileSync } from './file-sync'
import { CHECKSUM_PAGE_BYTES, SIDECAR_HEADER, entriesOf, entryOffset, pageSpan, pageSums, readEntriesSync, sidecarFor, sidecarPath } from './page-checksums'
import { punchHole } from './punch-hole'
import { writeAll, writeAllSync } from './write-all'
import { firstDifferentPage, readWithSums, writeWithSums } from './pread-sums'
import { SUMS_CACHE_MAX_BYTES, SUMS_CACHED_FILE_MAX_BYTES, SumsCache } from './sums-cache'
import type { TranslateError } from './store-errors'

// The filesystem page: the unit of allocation in a block file (space accounting's worst case,
// the thin copies' zero-page test).
export const PAGE_BYTES = 4096
const ZERO_CHUNK_BYTES = 1024 * 1024
const CHECK_CHUNK_BYTES = 1024 * 1024  // the scrub reads a version in pieces of this
// The page values of one native write (writeWholePages), copied into the sums cache right after.
const WRITE_SUMS = Buffer.alloc(4 * Math.ceil(SYNC_IO_MAX_BYTES / CHECKSUM_PAGE_BYTES))

export class VersionFiles {
  private readonly cache: FileCache
  private readonly sync: FileSync
  private canPunch = true     // false once the data dir's filesystem refused FALLOC_FL_PUNCH_HOLE

  // Version files with no sidecar (older than checksums): found by the start-up scan.
  private readonly unverified = new Set<string>()
  // Counted for Stat and the scrub report: mismatches found by reads, unverified files adopted.
  checksumErrors = 0
  // The sums of hot versions (SumsCache below), written through by updateSums: a read does not
  // pread the sidecar. Everything else that changes a sidecar forgets its entry.
  private readonly sumsCache = new SumsCache(SUMS_CACHE_MAX_BYTES)

  constructor (private readonly translate: TranslateError, maxOpenFiles = MAX_OPEN_FILES_DEFAULT, readonly checksums = true) {
    this.cache = new FileCache(maxOpenFiles)
    this.sync = new FileSync(this.cache, (file) => this.unverified.has(file))
  }

  markUnverified (file: string): void { this.unverified.add(file) }
  isUnverified (file: string): boolean { return this.unverified.has(file) }
  get unverifiedCount (): number { return this.unverified.size }

  get openFiles (): number { return this.cache.size }
  get fsyncCount (): number { return this.sync.fsyncCount }

  // [offset, offset+length) of `file`, checked against its sidecar; beyond the end of the file
  // reads as zeros. `recheck` runs the read again under the caller's range lock (see above).
  async read (file: string, offset: number, length: number, what: string, recheck?: (again: () => Promise<Buffer>) => Promise<Buffer>): Promise<Buffer> {
    if (length === 0 || this.unverified.has(file)) return await this.readRaw(file, offset, length, what)
    const { start, end } = pageSpan(offset, length)
    // fromFile: the sums as the sidecar holds them, not the cache's (a mismatch is re-checked so).
    const checked = async (fromFile: boolean): Promise<Buffer | number> => {
      // The bytes and their page values in one native call (on the pool when large), then the
      // stored sums: read after the bytes, so a write in between shows as a mismatch.
      const { data, sums: got } = await this.readWithSums(file, start, end - start, what)
      const sums = await this.readSums(file, start / CHECKSUM_PAGE_BYTES, (end - start) / CHECKSUM_PAGE_BYTES, what, fromFile)
      const bad = firstDifferentPage(got, sums, start / CHECKSUM_PAGE_BYTES)
      return bad < 0 ? data.subarray(offset - start, offset - start + length) : bad
    }
    let got = await checked(false)
    if (typeof got === 'number') this.sumsCache.forget(file)
    if (typeof got === 'number' && recheck === undefined) got = await checked(true)
    if (typeof got === 'number' && recheck !== undefined) {
      got = await recheck(async () => { const again = await checked(true); if (typeof again === 'number') throw new BadPage(again); return again }).catch(err => {
        if (err instanceof BadPage) return err.page
        throw err
      })
    }
    if (typeof got !== 'number') return got
    this.checksumErrors++
    throw UkaiError.checksum(`${what}: page ${got} (bytes ${got * CHECKSUM_PAGE_BYTES}..${(got + 1) * CHECKSUM_PAGE_BYTES}) of ${file} does not match its checksum`)
  }

  // The stored sums of `count` pages from `firstPage` on (0 past the sidecar's end: zeros): from
  // the cache, or the sidecar (then cached whole when it is small). `fromFile`: the file only
  // (the scrub checks the sidecar as stored).
  private async readSums (file: string, firstPage: number, count: number, what: string, fromFile = false): Promise<Buffer> {
    if (!fromFile) {
      const cached = this.sumsCache.get(file, firstPage, count)
      if (cached !== null) return cached
    }
    const lease = await this.acquireSidecar(file, what)
    try {
      if (!fromFile) {
        const size = (await lease.fh.stat()).size - SIDECAR_HEADER.length
        if (size >= 0 && size <= SUMS_CACHED_FILE_MAX_BYTES) {
          const all = readEntriesSync(lease.fh.fd, 0, Math.floor(size / 4))
          this.sumsCache.set(file, all)
          return this.sumsCache.get(file, firstPage, count) ?? entriesOf(all, firstPage, count)
        }
      }
      if (count * 4 <= SYNC_IO_MAX_BYTES) return readEntriesSync(lease.fh.fd, firstPage, count)
      const buf = Buffer.alloc(count * 4)
      await lease.fh.read(buf, 0, buf.length, entryOffset(firstPage))
      return buf
    } finally {
      lease.release()
    }
  }

  private async acquireSidecar (file: string, what: string, create = false): Promise<FileLease> {
    try {
      return await this.cache.acquire(sidecarPath(file), create)
    } catch (err) {
      throw this.translate(err, `${what}: checksum file`)
    }
  }

  // Re-computes the stored sums of the pages overlapping [offset, offset+length) after they
  // changed: pages wholly inside `data` (written at `offset`) from it, pages wholly inside a
  // zeroed range as 0, the partial pages at the edges from the file itself.
  private async updateSums (file: string, offset: number, length: number, data: Buffer | null, what: string): Promise<void> {
    if (length === 0 || this.unverified.has(file)) return
    const { start, end } = pageSpan(offset, length)
    const pages = (end - start) / CHECKSUM_PAGE_BYTES
    const sums = Buffer.alloc(pages * 4)
    const edge = async (page: number): Promise<void> => {
      const bytes = await this.readRaw(file, page * CHECKSUM_PAGE_BYTES, CHECKSUM_PAGE_BYTES, what)
      pageSums(bytes).copy(sums, (page - start / CHECKSUM_PAGE_BYTES) * 4)
    }
    const firstPage = start / CHECKSUM_PAGE_BYTES
    const headPartial = offset !== start
    const tailPartial = offset + length !== end
    if (data !== null) {
      const from = headPartial ? start + CHECKSUM_PAGE_BYTES : start
      const to = tailPartial ? end - CHECKSUM_PAGE_BYTES : end
      if (to > from) pageSums(data.subarray(from - offset, to - offset)).copy(sums, (from - start) / CHECKSUM_PAGE_BYTES * 4)
    }
    if (headPartial) await edge(firstPage)
    if (tailPartial && (pages > 1 || !headPartial)) await edge(firstPage + pages - 1)
    const lease = await this.acquireSidecar(file, what)
    try {
      if (sums.length <= SYNC_IO_MAX_BYTES) {
        writeAllSync(lease.fh.fd, sums, entryOffset(firstPage))
        this.sumsCache.update(file, firstPage, sums)  // no await between: a read sees both or neither
      } else {
        this.sumsCache.forget(file)
        await writeAll(lease.fh, sums, entryOffset(firstPage))
        this.sumsCache.forget(file)  // a read meanwhile may have cached the sidecar from before
      }
    } catch (err) {
      throw this.translate(err, `${what}: checksum file`)
    } finally {
      lease.release()
    }
  }

  // A sidecar computed from the version's current bytes (a staged copy before its rename, an
  // unverified version the scrub adopts), written durable under its final name.
  async writeSidecarFor (file: string, what: string): Promise<void> {
    if (!this.checksums) { this.unverified.add(file); return }  // the benchmark switch (above)
    this.sumsCache.forget(file)
    try {
      const data = await fsp.readFile(file)
      const tmp = sidecarPath(file) + '.tmp'
      const fh = await fsp.open(tmp, 'w', 0o644)
      try { await writeAll(fh, sidecarFor(data), 0); await this.fsync(fh) } finally { await fh.close() }
      this.cache.forget(sidecarPath(file))
      await fsp.rename(tmp, sidecarPath(file))
      this.unverified.delete(file)
    } catch (err) {
      throw this.translate(err, `${what}: checksum file`)
    }
  }

  // The sidecar of `src` copied for `dst` (a copy-on-write clone of the version): the clone's
  // bytes are the source's, so are its sums — rot in the source stays detectable in the copy.
  async copySidecar (src: string, dst: string): Promise<void> {
    this.sumsCache.forget(dst)
    if (this.unverified.has(src)) { this.unverified.add(dst); return }
    // The source's sums are written with pwrite through a cached handle: the copy sees them.
    await fsp.copyFile(sidecarPath(src), sidecarPath(dst))
    const fh = await fsp.open(sidecarPath(dst), 'r+')
    try { await this.fsync(fh) } finally { await fh.close() }
  }

  async renameSidecar (from: string, to: string): Promise<void> {
    this.sumsCache.forget(from)
    this.sumsCache.forget(to)
    this.cache.forget(sidecarPath(from))
    this.cache.forget(sidecarPath(to))
    if (this.unverified.delete(from)) { this.unverified.add(to); return }
    await fsp.rename(sidecarPath(from), sidecarPath(to))
  }

  // Returns the bytes the sidecar had allocated (a version's freed space counts them too).
  async removeSidecar (file: string): Promise<number> {
    this.sumsCache.forget(file)
    this.cache.forget(sidecarPath(file))
    this.unverified.delete(file)
    let bytes = 0
    try { bytes = (await fsp.stat(sidecarPath(file))).blocks * 512 } catch {}
    await fsp.rm(sidecarPath(file), { force: true })
    return bytes
  }

  // The scrub's check of a whole version file (called under the range lock of all of it):
  // every page against its sum; an unverified version gets its sidecar first (adopted). The
  // digest is crc32c over the sums with trailing zero pages left out, so two replicas holding
  // the same bytes agree whatever their files' sizes (a zero tail truncated or written).
  async check (file: string, what: string): Promise<{ sizeBytes: number, badPage: number, adopted: boolean, digest: number }> {
    if (!this.checksums) throw UkaiError.badArgument(`${what}: this node runs with --bench-no-checksums (a benchmark switch): nothing to check against`)
    const adopted = this.unverified.has(file)
    if (adopted) await this.writeSidecarFor(file, what)
    let sizeBytes: number, sideBytes: number
    try {
      sizeBytes = (await fsp.stat(file)).size
      sideBytes = (await fsp.stat(sidecarPath(file))).size
    } catch (err) {
      throw this.translate(err, what)
    }
    const pages = Math.max(Math.ceil(sizeBytes / CHECKSUM_PAGE_BYTES), Math.ceil((sideBytes - SIDECAR_HEADER.length) / 4))
    const sums = await this.readSums(file, 0, pages, what, true)
    let badPage = -1
    for (let pos = 0; pos < pages * CHECKSUM_PAGE_BYTES && badPage < 0; pos += CHECK_CHUNK_BYTES) {
      const len = Math.min(CHECK_CHUNK_BYTES, pages * CHECKSUM_PAGE_BYTES - pos)
      const { sums: got } = await this.readWithSums(file, pos, len, what)
      const first = pos / CHECKSUM_PAGE_BYTES
      badPage = firstDifferentPage(got, sums.subarray(first * 4, (first + len / CHECKSUM_PAGE_BYTES) * 4), first)
    }
    if (badPage >= 0) this.checksumErrors++
    let end = sums.length
    while (end >= 4 && sums.readUInt32LE(end - 4) === 0) end -= 4
    return { sizeBytes, badPage, adopted, digest: crc32c(sums.subarray(0, end)) }
  }

  // readRaw with the page values of what was read (pread-sums.ts).
  private async readWithSums (file: string, offset: number, length: number, what: string): Promise<{ data: Buffer, sums: Buffer }> {
    const lease = await this.cache.acquire(file)
    try {
      return await readWithSums(lease.fh.fd, offset, length)
    } catch (err) {
      throw this.translate(err, what)
    } finally {
      lease.release()
    }
  }

  private async readRaw (file: string, offset: number, length: number, what: string): Promise<Buffer> {
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
  // Its sums follow (see updateSums): a crash between the two is what a read then reports.
  async write (file: string, offset: number, data: Buffer): Promise<void> {
    const lease = this.cache.acquireOpen(file) ?? await this.cache.acquire(file)
    if (data.length > 0 && data.length <= SYNC_IO_MAX_BYTES && offset % CHECKSUM_PAGE_BYTES === 0 &&
        data.length % CHECKSUM_PAGE_BYTES === 0 && !this.unverified.has(file)) {
      try { await this.writeWholePages(file, lease.fh.fd, offset, data) } finally { lease.release() }
      return
    }
    try {
      if (data.length <= SYNC_IO_MAX_BYTES) writeAllSync(lease.fh.fd, data, offset)
      else await writeAll(lease.fh, data, offset)
    } finally {
      lease.release()
    }
    await this.updateSums(file, offset, data.length, data, `write ${file}`)
  }

  // Whole pages, small (the 4 KiB random write): the bytes, their sums and the sidecar's pwrite
  // in one native call (pread-sums.ts writeWithSums), the cache updated in the same turn.
  private async writeWholePages (file: string, fd: number, offset: number, data: Buffer): Promise<void> {
    const what = `write ${file}`
    const side = this.cache.acquireOpen(sidecarPath(file)) ?? await this.acquireSidecar(file, what)
    const firstPage = offset / CHECKSUM_PAGE_BYTES
    const sums = WRITE_SUMS.subarray(0, 4 * (data.length / CHECKSUM_PAGE_BYTES))
    try {
      writeWithSums(fd, data, offset, sums, side.fh.fd, entryOffset(firstPage))
      this.sumsCache.update(file, firstPage, sums)  // copied in; no await between: see updateSums
    } catch (err) {
      if ((err as { op?: string }).op === 'pwrite-sums') throw this.translate(err, `${what}: checksum file`)
      throw err
    } finally {
      side.release()
    }
  }

  // Creates `file` empty, if it does not exist, with an empty sidecar (every page reads as zeros).
  async create (file: string): Promise<void> {
    const lease = await this.cache.acquire(file, true)
    lease.release()
    this.sumsCache.forget(file)
    if (!this.checksums) { this.unverified.add(file); return }  // the benchmark switch (above)
    this.unverified.delete(file)
    const side = await this.acquireSidecar(file, `create ${file}`, true)
    try {
      await side.fh.truncate(0)
      writeAllSync(side.fh.fd, SIDECAR_HEADER, 0)
    } finally {
      side.release()
    }
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
      if (offset + length >= sizeBytes) await this.truncateSums(file, offset)
      else await this.updateSums(file, offset, length, null, `zero ${file}`)
      return st.blocks * 512
    } finally {
      lease.release()
    }
  }

  // Pages from `offset` on read as zeros now: the sidecar ends there (its partial last page re-summed).
  private async truncateSums (file: string, offset: number): Promise<void> {
    if (this.unverified.has(file)) return
    const keepPages = Math.ceil(offset / CHECKSUM_PAGE_BYTES)
    this.sumsCache.forget(file)
    const side = await this.acquireSidecar(file, `truncate ${file}`)
    try { await side.fh.truncate(entryOffset(keepPages)) } finally { side.release() }
    if (offset % CHECKSUM_PAGE_BYTES !== 0) await this.updateSums(file, offset, 0 + (keepPages * CHECKSUM_PAGE_BYTES - offset), null, `truncate ${file}`)
  }

  // Durability (file-sync.ts): every fsync counted, and failed on purpose in tests.
  fsyncFiles (files: string[]): Promise<void> { return this.sync.fsyncFiles(files) }
  syncDir (dir: string): Promise<void> { return this.sync.syncDir(dir) }
  fsync (fh: { sync: () => Promise<void> }): Promise<void> { return this.sync.fsync(fh) }
  countFsync (): void { this.sync.countFsync() }

  // Forget a path (deleted or renamed over); its handle closes once unused.
  forget (file: string): void { this.cache.forget(file); this.cache.forget(sidecarPath(file)); this.sumsCache.forget(file) }
  forgetUnder (dir: string): void { this.cache.forgetUnder(dir); this.sumsCache.forgetUnder(dir) }
  async closeAll (): Promise<void> { await this.cache.closeAll() }
}

// A page that still failed its check when read again under the range lock.
class BadPage extends Error {
  constructor (readonly page: number) { super(`bad page ${page}`) }
}
