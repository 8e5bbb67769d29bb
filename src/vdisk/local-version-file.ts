// One version file a short-circuit read opened on this host (short-circuit-reads.ts decides
// which, and keeps them): both read-only descriptors (the version file and its checksum sidecar),
// opened together and closed together once no read in flight uses them; the sidecar's sums kept
// with them; the unchecked read of the benchmark switch. Separate from short-circuit-reads.ts,
// which owns what is cached and when it is dropped: this is what one open file needs, whatever
// the cache.
import fs from 'node:fs'
import { promisify } from 'node:util'
import { SIDECAR_HEADER_BYTES, readEntriesSync, sidecarPath } from '../storagenode/page-checksums'
import { SYNC_IO_MAX_BYTES } from '../lib/limits'

// The descriptors of an open version file and what decides when they close.
export interface OpenVersionFile {
  fd: number | null             // null: absent, or closed to stay within the bound (reopened on use)
  sumFd: number | null          // its checksum sidecar, opened and closed with fd
  // The sidecar's sums, kept while this agent holds the lease (every write then comes through
  // it: `mutating` clears them) and fd is open; see SUMS_CACHED_MAX_BYTES.
  sums: Buffer | null
  evicted: boolean              // close the fd once no async read uses it; the entry stays valid
  reading: number               // async reads in flight on fd: close waits for them
  dropped: boolean
}

// The benchmark switch's read (no sidecar): the bytes alone, zeros past the file's end.
export async function readUnchecked (fd: number, at: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length)
  let got = 0
  while (got < length) {  // small reads on the loop: see lib/limits.ts
    const n = length <= SYNC_IO_MAX_BYTES ? fs.readSync(fd, buf, got, length - got, at + got) : (await readAsync(fd, buf, got, length - got, at + got)).bytesRead
    if (n === 0) break
    got += n
  }
  return buf.fill(0, got)  // past the end of the version file: zeros, as the node answers
}
const readAsync = promisify(fs.read)

// An fd is closed once dropped and no async read uses it (a closed and reused fd number could
// otherwise be read by a read still queued in the thread pool).
export function closeWhenIdle (e: OpenVersionFile): void {
  if (!(e.dropped || e.evicted) || e.reading > 0 || e.fd === null) return
  const fd = e.fd
  const sumFd = e.sumFd
  e.fd = null
  e.sumFd = null
  e.sums = null
  try { fs.closeSync(fd) } catch { /* nothing to do about a failed close of a read-only fd */ }
  if (sumFd !== null) try { fs.closeSync(sumFd) } catch { /* as above */ }
}

// Sums cached per open entry at most this big (a 4 MiB block has 4 KiB of them): within the
// bound on open files (--local-read-files, 1024) that is at most 16 MiB; a bigger sidecar is
// read per read. Saves one pread per 4 KiB read (measured in docs/performance.md).
const SUMS_CACHED_MAX_BYTES = 16 * 1024

// All of a sidecar's entries, or null when it is bigger than SUMS_CACHED_MAX_BYTES.
export function wholeSidecar (sumFd: number): Buffer | null {
  const size = fs.fstatSync(sumFd).size - SIDECAR_HEADER_BYTES
  if (size < 0 || size > SUMS_CACHED_MAX_BYTES) return null
  return readEntriesSync(sumFd, 0, Math.floor(size / 4))
}

// A version file and its checksum sidecar, both read-only; null when it has no sidecar.
// `verify` false (the benchmark switch): the version file alone.
export function openWithSums (file: string, verify: boolean): { fd: number, sumFd: number | null } | null {
  if (!verify) return { fd: fs.openSync(file, fs.constants.O_RDONLY), sumFd: null }
  let sumFd: number
  try {
    sumFd = fs.openSync(sidecarPath(file), fs.constants.O_RDONLY)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      fs.accessSync(file)  // the version itself gone: the caller's ENOENT path
      return null
    }
    throw err
  }
  try {
    return { fd: fs.openSync(file, fs.constants.O_RDONLY), sumFd }
  } catch (err) {
    fs.closeSync(sumFd)
    throw err
  }
}
