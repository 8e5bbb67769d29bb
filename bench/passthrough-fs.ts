// A minimal fuse-native passthrough of a local directory: the ceiling for any Node FUSE file
// system on this machine, which UKAI is compared against. Every operation maps to one fs call
// on a real file descriptor; FUSE file handles are those fds.
//
// It runs as its own process (its own event loop, as the UKAI agent does):
//   node dist/bench/passthrough-fs.js BACKING_DIR MOUNT_POINT [--tuned]
// --tuned: on UKAI's fuse-native build with the options the UKAI mount adds (1 MiB requests,
// parallel direct writes); without it, fuse-native as published: the minimal baseline.
// prints {"msg":"ready"} once mounted and unmounts on SIGTERM/SIGINT.
// startPassthrough() below spawns it and waits for that line.
import fs from 'node:fs'
import path from 'node:path'
import { spawnLogged, stopLogged, waitForReadyLine } from '../src/dev/processes'
import { isMounted, unmount } from '../src/lib/mounts'
import { loadNative } from '../src/native'
import { FUSE_NATIVE_TUNING_OPTIONS } from '../src/agent/fuse-adapter'

// The same extra libfuse options the UKAI mount uses (src/agent/fuse-adapter.ts), so the two
// mounts differ only in what is behind them: direct_io, 128 KiB writes, no attribute caching.
export const PASSTHROUGH_LIBFUSE_OPTIONS = ['direct_io', 'big_writes', 'attr_timeout=0', 'entry_timeout=0', 'negative_timeout=0']

const O_DIRECT = fs.constants.O_DIRECT ?? 0o40000
const EIO = -5

// ---- the file system (child process) ---------------------------------------------------------

type Cb = (code: number, ...rest: any[]) => void

function errno (err: NodeJS.ErrnoException): number {
  return typeof err.errno === 'number' && err.errno < 0 ? err.errno : EIO
}

function passthroughOps (root: string): object {
  const real = (p: string): string => path.join(root, p)
  // The backing file is read through the page cache: O_DIRECT needs aligned buffers, which
  // libfuse's are not guaranteed to be. The storage nodes behind UKAI use the page cache too.
  const backingFlags = (flags: number): number => flags & ~O_DIRECT
  return {
    getattr (p: string, cb: Cb) { fs.lstat(real(p), (err, st) => err ? cb(errno(err)) : cb(0, st)) },
    fgetattr (_p: string, fd: number, cb: Cb) { fs.fstat(fd, (err, st) => err ? cb(errno(err)) : cb(0, st)) },
    readdir (p: string, cb: Cb) { fs.readdir(real(p), (err, names) => err ? cb(errno(err)) : cb(0, names)) },
    open (p: string, flags: number, cb: Cb) { fs.open(real(p), backingFlags(flags), (err, fd) => err ? cb(errno(err)) : cb(0, fd)) },
    create (p: string, mode: number, cb: Cb) {
      fs.open(real(p), fs.constants.O_RDWR | fs.constants.O_CREAT, mode, (err, fd) => err ? cb(errno(err)) : cb(0, fd))
    },
    read (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void) {
      fs.read(fd, buf, 0, len, pos, (err, n) => cb(err ? errno(err) : n))
    },
    write (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void) {
      fs.write(fd, buf, 0, len, pos, (err, n) => cb(err ? errno(err) : n))
    },
    release (_p: string, fd: number, cb: Cb) { fs.close(fd, (err) => cb(err ? errno(err) : 0)) },
    flush (_p: string, _fd: number, cb: Cb) { cb(0) },
    fsync (_p: string, datasync: boolean, fd: number, cb: Cb) {
      const done = (err: NodeJS.ErrnoException | null): void => cb(err ? errno(err) : 0)
      if (datasync) fs.fdatasync(fd, done)
      else fs.fsync(fd, done)
    },
    truncate (p: string, size: number, cb: Cb) { fs.truncate(real(p), size, (err) => cb(err ? errno(err) : 0)) },
    ftruncate (_p: string, fd: number, size: number, cb: Cb) { fs.ftruncate(fd, size, (err) => cb(err ? errno(err) : 0)) },
    unlink (p: string, cb: Cb) { fs.unlink(real(p), (err) => cb(err ? errno(err) : 0)) },
    chmod (_p: string, _mode: number, cb: Cb) { cb(0) },
    utimens (_p: string, _atime: number, _mtime: number, cb: Cb) { cb(0) }
  }
}

function serve (backingDir: string, mountPoint: string, tuned: boolean): void {
  // Loaded here only: the parent process never needs the native binding.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const Fuse = tuned ? loadNative<typeof import('fuse-native')>('fuse-native') : require('fuse-native') as typeof import('fuse-native')
  const fuse = new Fuse(mountPoint, passthroughOps(backingDir), {
    force: true,
    mkdir: true,
    fsname: ['passthrough', ...PASSTHROUGH_LIBFUSE_OPTIONS, ...(tuned ? FUSE_NATIVE_TUNING_OPTIONS : [])].join(','),
    subtype: 'passthrough'
  })
  fuse.mount((err) => {
    if (err !== null) {
      process.stdout.write(JSON.stringify({ msg: 'mount failed', err: err.message }) + '\n')
      process.exit(1)
    }
    process.stdout.write(JSON.stringify({ msg: 'ready', pid: process.pid, mountPoint }) + '\n')
  })
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    fuse.unmount(() => process.exit(0))
    setTimeout(() => process.exit(0), 5_000).unref()
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

// ---- starting and stopping it (parent process) ----------------------------------------------

export interface PassthroughMount {
  readonly pid: number
  readonly mountPoint: string
  readonly backingDir: string
  stop (): Promise<void>
}

export async function startPassthrough (opts: { backingDir: string, mountPoint: string, logFile: string, tuned?: boolean }): Promise<PassthroughMount> {
  fs.mkdirSync(opts.backingDir, { recursive: true })
  fs.mkdirSync(opts.mountPoint, { recursive: true })
  const proc = spawnLogged({ argv: [process.execPath, __filename, opts.backingDir, opts.mountPoint, ...(opts.tuned === true ? ['--tuned'] : [])], logFile: opts.logFile })
  try {
    await waitForReadyLine(proc, 'passthrough FUSE mount')
  } catch (err) {
    await unmount(opts.mountPoint).catch(() => {})
    throw err
  }
  return {
    pid: proc.pid,
    mountPoint: opts.mountPoint,
    backingDir: opts.backingDir,
    stop: async () => {
      try {
        await stopLogged(proc, { termTimeoutMs: 5_000 })
      } finally {
        if (isMounted(opts.mountPoint)) await unmount(opts.mountPoint)
      }
    }
  }
}

if (require.main === module) {
  const [backingDir, mountPoint, flag] = process.argv.slice(2)
  if (backingDir === undefined || mountPoint === undefined) {
    process.stderr.write('usage: passthrough-fs BACKING_DIR MOUNT_POINT [--tuned]\n')
    process.exit(2)
  }
  serve(path.resolve(backingDir), path.resolve(mountPoint), flag === '--tuned')
}
