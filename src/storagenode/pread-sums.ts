// A read and its checksum work in one native call (native/pread-sums): pread into the caller's
// buffer, then the sidecar's value of every 4 KiB page (page-checksums.ts) — async on libuv's
// thread pool, so the crc32c of a large read runs on the worker that read the bytes instead of
// on the event loop afterwards. Measured before it (docs/performance.md "Checksums"): sequential
// 1 MiB reads ran at 0.72 of their speed without checksums, the agent spending ~0.3–0.4 ms of its
// single event-loop thread per MiB on crc32c; the node the same for remote reads.
// Small reads (≤ SYNC_IO_MAX_BYTES, src/lib/limits.ts) use the sync variant on the loop, as
// their pread already was: the pool's round trip costs more than a 4 KiB read and its crc.
// Used by the node's reads (version-files.ts) and the agent's short-circuit reads
// (src/vdisk/short-circuit-reads.ts); the node's page-aligned small writes use its write twin
// (writeWithSums); other sums of buffers in memory go through page-checksums.ts's pageSums.
import * as os from 'node:os'
import { loadNative } from '../native'
import { SYNC_IO_MAX_BYTES } from '../lib/limits'

// The page the addon sums (its PAGE); page-checksums.ts's NATIVE_PAGE_BYTES is this one.
export const NATIVE_PAGE_BYTES = 4096

export interface PreadSumsResult { bytesRead: number, badPage: number }

interface PreadSumsAddon {
  preadSums: (fd: number, buf: Uint8Array, position: number, sums: Uint8Array, expected: Uint8Array | null, sumFd?: number, sumPosition?: number) => Promise<PreadSumsResult>
  preadSumsSync: (fd: number, buf: Uint8Array, position: number, sums: Uint8Array, expected: Uint8Array | null, sumFd?: number, sumPosition?: number) => PreadSumsResult
  pageSumsSync: (buf: Uint8Array, sums: Uint8Array, portable?: boolean) => void
  pwriteSumsSync: (fd: number, buf: Uint8Array, position: number, sums: Uint8Array, sumFd: number, sumPosition: number) => void
  fdatasyncAll: (fds: Int32Array) => Promise<Int32Array>
  linkCountSync: (fd: number) => number
  hardware: boolean
}

let addon: PreadSumsAddon | undefined

// Loaded when a daemon starts (block store, short-circuit reads): a missing build fails it then.
export function preadSumsAddon (): PreadSumsAddon {
  addon ??= loadNative<PreadSumsAddon>('pread-sums/build/Release/pread_sums.node')
  return addon
}

// Reads `length` bytes of fd at `position` (zeros past its end) with the sidecar values of their
// pages (one u32 LE per page, a partial last page zero-padded). On the pool when large.
// With `stored` (the sidecar's descriptor and where these pages' entries start), the stored
// values are read in the same call, after the bytes, and `badPage` is the first page (counted
// from the read's first) whose value differs from the stored one, else -1.
export async function readWithSums (fd: number, position: number, length: number, stored?: { fd: number, position: number }): Promise<{ data: Buffer, sums: Buffer, bytesRead: number, badPage: number }> {
  const a = preadSumsAddon()
  const data = Buffer.allocUnsafe(length)
  const sums = Buffer.allocUnsafe(4 * Math.ceil(length / NATIVE_PAGE_BYTES))
  const expected = stored === undefined ? null : Buffer.allocUnsafe(sums.length)
  const r = length <= SYNC_IO_MAX_BYTES
    ? a.preadSumsSync(fd, data, position, sums, expected, stored?.fd, stored?.position)
    : await a.preadSums(fd, data, position, sums, expected, stored?.fd, stored?.position)
  return { data, sums, bytesRead: r.bytesRead, badPage: r.badPage }
}

// The write twin (the node's page-aligned writes up to SYNC_IO_MAX_BYTES): pwrite `data` at
// `position` on fd, then its pages' values into `sums` and pwrite them at `sumPosition` on sumFd,
// in one call on the loop. An Error with op 'pwrite-sums' means the bytes were written and their
// sums not (version-files.ts reports it as the sidecar's failure).
export function writeWithSums (fd: number, data: Buffer, position: number, sums: Buffer, sumFd: number, sumPosition: number): void {
  preadSumsAddon().pwriteSumsSync(fd, data, position, sums, sumFd, sumPosition)
}

// fdatasync of every fd, in order, in one job on libuv's pool: each one's errno (0: done).
// The caller keeps them open until it settles (version-files.ts fsyncFiles: a flush).
export async function fdatasyncAll (fds: Int32Array): Promise<Int32Array> {
  return await preadSumsAddon().fdatasyncAll(fds)
}

// An Error as node:fs makes them (.code, .errno, .syscall, .path) from an errno.
export function errnoError (errno: number, syscall: string, file: string): NodeJS.ErrnoException {
  const code = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0] ?? 'EIO'
  return Object.assign(new Error(`${code}: ${syscall} '${file}'`), { code, errno: -errno, syscall, path: file })
}

// The first page (counted from `firstPage`) whose value in `got` differs from `want`'s (an entry
// missing from `want` is 0: a zero page), or -1. A memcmp when all match, the usual case.
export function firstDifferentPage (got: Buffer, want: Buffer, firstPage: number): number {
  if (got.length === want.length && got.equals(want)) return -1
  for (let i = 0; i * 4 < got.length; i++) {
    const w = i * 4 + 4 <= want.length ? want.readUInt32LE(i * 4) : 0
    if (got.readUInt32LE(i * 4) !== w) return firstPage + i
  }
  return -1
}
