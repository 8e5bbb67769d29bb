// The options our fuse-native build adds (native/fuse-native/*.patch): fn_max_write=1048576 makes
// the kernel send 1 MiB write requests (libfuse 2 alone: 128 KiB), fn_parallel_direct_writes lets
// direct writes to one file reach the file system in parallel (without it the kernel holds the
// inode lock across each write, so they arrive one at a time). Checked on a real FUSE mount of a
// tiny file system that records the size of every write request and how many were in flight,
// written by four dd processes at once; the same mount without the options is the control.
// Every byte written is also read back and compared (asynchronously: this process serves the mount).
import crypto from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import type Fuse from 'fuse-native'
import { loadNative } from '../src/native'
import { isMounted, unmount } from '../src/lib/mounts'
import { FUSE_NATIVE_TUNING_OPTIONS } from '../src/agent/fuse-adapter'
import { dd } from './helpers/dd'

const MiB = 1024 * 1024
const FILE_BYTES = 16 * MiB
const WRITERS = 4
const WRITE_DELAY_MS = 40   // each write stays in flight this long, so overlap is seen when allowed
const S_IFREG = 0o100000
const S_IFDIR = 0o040000

interface Recorder { sizes: number[], inFlight: number, maxInFlight: number, data: Buffer }

type Cb = (code: number, ...rest: unknown[]) => void

function recordingOps (rec: Recorder): object {
  const now = new Date()
  const attr = (mode: number, size: number): object => ({ mtime: now, atime: now, ctime: now, nlink: 1, size, mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 })
  return {
    getattr (p: string, cb: Cb) {
      if (p === '/') return cb(0, attr(S_IFDIR | 0o755, 4096))
      if (p === '/f') return cb(0, attr(S_IFREG | 0o644, FILE_BYTES))
      cb(-2)
    },
    readdir (p: string, cb: Cb) { p === '/' ? cb(0, ['f']) : cb(-2) },
    open (_p: string, _flags: number, cb: Cb) { cb(0, 42) },
    release (_p: string, _fd: number, cb: Cb) { cb(0) },
    write (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
      rec.sizes.push(len)
      buf.copy(rec.data, pos, 0, len)
      rec.maxInFlight = Math.max(rec.maxInFlight, ++rec.inFlight)
      setTimeout(() => { rec.inFlight--; cb(len) }, WRITE_DELAY_MS)
    },
    read (_p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) {
      const n = Math.max(0, Math.min(len, FILE_BYTES - pos))
      rec.data.copy(buf, 0, pos, pos + n)
      cb(n)
    }
  }
}

async function writeFromFourProcesses (t: Test, tuning: string[]): Promise<Recorder> {
  const FuseClass = loadNative<typeof Fuse>('fuse-native')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-fn-tuning-'))
  const mnt = path.join(dir, 'mnt')
  const src = path.join(dir, 'src')
  fs.mkdirSync(mnt)
  const rec: Recorder = { sizes: [], inFlight: 0, maxInFlight: 0, data: Buffer.alloc(FILE_BYTES) }
  const fuse = new FuseClass(mnt, recordingOps(rec) as any, { fsname: ['fn-tuning', 'direct_io', 'big_writes', ...tuning].join(',') })
  await new Promise<void>((resolve, reject) => fuse.mount((err: Error | null) => err ? reject(err) : resolve()))
  t.teardown(async () => {
    if (isMounted(mnt)) await unmount(mnt).catch(() => {})
    fs.rmSync(dir, { recursive: true, force: true })
  })
  const expected = crypto.randomBytes(FILE_BYTES)
  fs.writeFileSync(src, expected)
  const per = FILE_BYTES / WRITERS / MiB
  await Promise.all(Array.from({ length: WRITERS }, async (_, i) => await dd([
    `if=${src}`, `of=${path.join(mnt, 'f')}`, 'bs=1M', `count=${per}`, `skip=${i * per}`, `seek=${i * per}`, 'conv=notrunc', 'oflag=direct', 'status=none'
  ])))
  t.ok((await fs.promises.readFile(path.join(mnt, 'f'))).equals(expected), 'every byte written from four processes reads back')
  // fuse-native's own unmount also lets go of the event loop (this process can then exit).
  await new Promise<void>((resolve, reject) => fuse.unmount((err: Error | null) => err ? reject(err) : resolve()))
  return rec
}

t.test('with the tuning options: 1 MiB write requests, several in flight on one file', async (t) => {
  const rec = await writeFromFourProcesses(t, FUSE_NATIVE_TUNING_OPTIONS)
  t.equal(Math.max(...rec.sizes), MiB, 'the largest write request is 1 MiB')
  t.equal(rec.sizes.length, FILE_BYTES / MiB, `${FILE_BYTES / MiB} requests for ${FILE_BYTES / MiB} MiB`)
  // FOPEN_PARALLEL_DIRECT_WRITES arrived in Linux 6.2; an older kernel ignores the bit.
  const [major, minor] = os.release().split('.').map(Number)
  if (major > 6 || (major === 6 && minor >= 2)) t.ok(rec.maxInFlight >= 2, `writes to the one file overlapped (at most ${rec.maxInFlight} in flight)`)
  else t.comment(`kernel ${os.release()} predates parallel direct writes (6.2): not checked`)
})

t.test('without them (libfuse 2 as it comes): 128 KiB requests, one at a time', async (t) => {
  const rec = await writeFromFourProcesses(t, [])
  t.equal(Math.max(...rec.sizes), 128 * 1024, 'the largest write request is 128 KiB')
  t.equal(rec.maxInFlight, 1, 'the kernel let one write in at a time')
})
