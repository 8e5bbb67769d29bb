// The thin FUSE layer: unpack arguments, await one Agent method, call back exactly once.
// Every disk is a regular file in the mount's root directory.
import * as fs from 'node:fs'
import type Fuse from 'fuse-native'
import { UkaiError } from '../errors'
import { Logger } from '../log'
import { loadNative } from '../native'
import { HEAP_GROWING_PERCENT_AGENT_DEFAULT, capHeapGrowth, holdGcBallast } from '../lib/gc-ballast'
import { DiskFileOwner } from '../meta/schema'
import { VirtualDisk } from '../vdisk/virtual-disk'
import { SeekWhence, seekAllocation } from '../vdisk/allocation'
import { Agent } from './agent'
import { toErrno } from './fuse-errno'
import type { DiskIoSink } from './io-sink'

// fuse-native builds the libfuse option string from a fixed list of its own options; libfuse2's
// `direct_io` (no kernel page cache: another host's writes are never hidden behind stale pages),
// `hard_remove` (rm of an open disk reaches us, which refuses it, instead of a hidden rename),
// `big_writes` (128 KiB write requests instead of 4 KiB) and zero attribute/entry timeouts (a
// resize elsewhere is seen at once) are not on it, so they ride along in the fsname value.
const LIBFUSE_EXTRA_OPTIONS = ['direct_io', 'big_writes', 'hard_remove', 'attr_timeout=0', 'entry_timeout=0', 'negative_timeout=0']
// Our fuse-native build's own options (native/fuse-native/*.patch; taken out before libfuse sees
// them): 1 MiB requests instead of libfuse2's 128 KiB (one round trip to the nodes per MiB, not
// eight), and direct writes to one file in parallel: without it the kernel holds the inode lock
// across each write, so a guest's queue of writes reaches us one at a time.
export const FUSE_NATIVE_TUNING_OPTIONS = ['fn_max_write=1048576', 'fn_parallel_direct_writes']
// fuse-native fails an operation that has not called back after this long; our own deadlines
// (storage calls, lease hand-over) are shorter, so this only catches bugs.
const FUSE_OP_TIMEOUT_MS = 120_000

const S_IFREG = 0o100000
const S_IFDIR = 0o040000
const O_ACCMODE = 3
const O_RDONLY = 0
// O_SYNC includes this bit. With direct_io the kernel sends no FSYNC after an O_DSYNC write
// (fuse_direct_write_iter has no generic_write_sync), so such a handle's writes flush here.
const O_DSYNC = 0o10000
const ENODATA = -61
const ENXIO = -6
const EINVAL = -22
// lseek(2) whence values the kernel passes on (it answers SEEK_SET/CUR/END itself).
const SEEK_WHENCE: Record<number, SeekWhence> = { 3: 'data', 4: 'hole' }
const EOPNOTSUPP = -95

export interface FuseMountOptions {
  allowOther?: boolean
  io?: DiskIoSink  // told of every disk read, write and fsync answered (the metrics)
  heapGrowingPercent?: number  // the V8 heap's growth after a mark-compact (lib/gc-ballast.ts; 0: V8's own)
}

// fusermount lets a user other than root mount with allow_other only when fuse.conf says so.
const FUSE_CONF = '/etc/fuse.conf'

// Refuses, before anything starts, a mount that libfuse would refuse with only "fuse failed".
export function checkMountOptions (opts: FuseMountOptions, conf = FUSE_CONF): void {
  if (opts.allowOther !== true || process.getuid?.() === 0) return
  let text = ''
  try { text = fs.readFileSync(conf, 'utf8') } catch {}
  if (!/^\s*user_allow_other\s*$/m.test(text)) {
    throw UkaiError.badArgument(`--allow-other as a user other than root needs a line 'user_allow_other' in ${conf} (or run the agent as root)`)
  }
}

// Snapshots appear read-only as /.snapshots/DISK@NAME.
export const SNAPSHOT_DIR = '.snapshots'
const SNAPSHOT_PREFIX = `/${SNAPSHOT_DIR}/`
const EROFS = -30

// fuse-native as scripts/build-native.sh builds it (patched: fallocate, lseek); loaded at the first
// mount, so CLI verbs that never mount do not need the addon.
function loadFuse (): typeof Fuse {
  return loadNative<typeof Fuse>('fuse-native')
}

function diskName (path: string): string | null {
  const name = path.slice(1)
  return name.length > 0 && !name.includes('/') && name !== SNAPSHOT_DIR ? name : null
}

function snapshotRef (path: string): string | null {
  if (!path.startsWith(SNAPSHOT_PREFIX)) return null
  const ref = path.slice(SNAPSHOT_PREFIX.length)
  return ref.length > 0 && !ref.includes('/') ? ref : null
}

function inSnapshots (path: string): boolean {
  return path === `/${SNAPSHOT_DIR}` || path.startsWith(SNAPSHOT_PREFIX)
}

export function mountAgent (agent: Agent, mountPoint: string, log: Logger, opts: FuseMountOptions = {}): Promise<Fuse> {
  const Fuse = loadFuse()
  holdGcBallast()  // the agent streams every I/O to the nodes: see lib/gc-ballast.ts
  capHeapGrowth(opts.heapGrowingPercent ?? HEAP_GROWING_PERCENT_AGENT_DEFAULT)  // which holds only with a fixed heap growth: see there
  const root = agent.defaultOwner
  const started = Date.now()
  // Handles opened O_DSYNC/O_SYNC (QEMU cache=writethrough): every write is durable before it is
  // acknowledged, as the open flag promises.
  const syncWriteHandles = new Set<number>()
  const io = opts.io

  // Wraps an op whose callback takes (result) where result ≥ 0 is success, < 0 is -errno.
  function run<T> (op: string, cb: (code: number, value?: T) => void, fn: () => Promise<T>, ok: (v: T) => [number, T?] = (v) => [0, v]): void {
    fn().then(v => { const [code, val] = ok(v); cb(code, val) }, err => cb(toErrno(err, log, op)))
  }

  // st_blocks (512-byte units): what the disk really uses when the agent knows it, else its size.
  function fileStat (sizeBytes: number, createdAtMs: number, owner: DiskFileOwner, usedBytes: number | null = null): object {
    const t = new Date(createdAtMs)
    return { mode: S_IFREG | owner.mode, uid: owner.uid, gid: owner.gid, size: sizeBytes, nlink: 1, blksize: 4096, blocks: Math.ceil((usedBytes ?? sizeBytes) / 512), atime: t, mtime: t, ctime: t }
  }

  // For attribute ops on a disk file: calls `fn` with the disk's name, or answers `notDisk` for
  // the root directory and anything under .snapshots (read-only, no attributes of their own),
  // ENOENT for anything else.
  function withDisk (path: string, notDisk: number, cb: (code: number) => void, fn: (name: string) => void): void {
    if (path === '/' || inSnapshots(path)) return cb(notDisk)
    const name = diskName(path)
    if (name === null) return cb(Fuse.ENOENT)
    fn(name)
  }

  const ops = {
    getattr (path: string, cb: (code: number, stat?: object) => void) {
      if (path === '/' || path === `/${SNAPSHOT_DIR}`) {
        const t = new Date(started)
        return cb(0, { mode: S_IFDIR | (path === '/' ? 0o755 : 0o555), uid: root.uid, gid: root.gid, size: 4096, nlink: 2, atime: t, mtime: t, ctime: t })
      }
      const ref = snapshotRef(path)
      if (ref !== null) {
        return run('getattr', cb, async () => {
          const snap = await agent.statSnapshot(ref)
          return fileStat(snap.sizeBytes, snap.createdAtMs, { ...root, mode: 0o440 })
        })
      }
      const name = diskName(path)
      if (name === null) return cb(Fuse.ENOENT)
      run('getattr', cb, async () => {
        const rec = await agent.stat(name)
        return fileStat(rec.sizeBytes, rec.createdAtMs, agent.fileOwner(rec), agent.allocatedBytes(rec))
      })
    },
    readdir (path: string, cb: (code: number, names?: string[]) => void) {
      if (path === `/${SNAPSHOT_DIR}`) return cb(0, agent.listSnapshotFiles())
      if (path !== '/') return cb(Fuse.ENOTDIR)
      cb(0, [SNAPSHOT_DIR, ...agent.listDisks()])
    },
    open (path: string, flags: number, cb: (code: number, fh?: number) => void) {
      const ref = snapshotRef(path)
      if (ref !== null) return run('open', cb, () => agent.openSnapshot(ref, (flags & O_ACCMODE) !== O_RDONLY))
      const name = diskName(path)
      if (name === null) return cb(Fuse.ENOENT)
      run('open', cb, async () => {
        const fh = await agent.openDisk(name, (flags & O_ACCMODE) !== O_RDONLY)
        if ((flags & O_DSYNC) !== 0) syncWriteHandles.add(fh)
        return fh
      })
    },
    create (path: string, mode: number, cb: (code: number, fh?: number) => void) {
      if (inSnapshots(path)) return cb(EROFS)
      const name = diskName(path)
      if (name === null) return cb(Fuse.EACCES)
      run('create', cb, () => agent.create(name, mode))
    },
    release (_path: string, fh: number, cb: (code: number) => void) {
      syncWriteHandles.delete(fh)
      run('release', cb, () => agent.release(fh))
    },
    read (_path: string, fh: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void) {
      run('read', cb, async () => {
        const t0 = io === undefined ? 0 : performance.now()
        const r = agent.reader(fh)
        let data: Buffer
        try { data = await r.read(pos, len) } catch (err) { if (io !== undefined && r instanceof VirtualDisk) io.failed(r.name, 'read'); throw err }
        data.copy(buf)
        if (io !== undefined && r instanceof VirtualDisk) io.read(r.name, data.length, t0)
        return data.length
      }, n => [n])
    },
    write (_path: string, fh: number, buf: Buffer, len: number, pos: number, cb: (result: number) => void) {
      // buf belongs to libfuse until we call back, which happens only after every replica acked.
      run('write', cb, async () => {
        const t0 = io === undefined ? 0 : performance.now()
        const disk = agent.disk(fh)
        try {
          await disk.write(pos, buf.subarray(0, len))
          if (syncWriteHandles.has(fh)) await disk.flush()
        } catch (err) { io?.failed(disk.name, 'write'); throw err }
        io?.write(disk.name, len, t0)
        return len
      }, n => [n])
    },
    // close() of any descriptor (also the copies a forked child closes at exec) sends FLUSH.
    // Writes are acknowledged by every replica already; durability is fsync's job, so FLUSH
    // does no I/O — an fsync here would make every fork of QEMU pay for a full flush. Answering 0
    // claims no durability: close(2) promises none. RELEASE (the last close) does flush
    // (VirtualDisk.close); the kernel ignores its answer, so fsync is the only durable report.
    flush (_path: string, _fh: number, cb: (code: number) => void) { cb(0) },
    fsync (path: string, _datasync: boolean, fh: number, cb: (code: number) => void) {
      if (inSnapshots(path)) return cb(0)  // nothing to make durable: committed versions are
      run('fsync', cb, async () => {
        const t0 = io === undefined ? 0 : performance.now()
        const disk = agent.disk(fh)
        try { await disk.flush() } catch (err) { io?.failed(disk.name, 'flush'); throw err }
        io?.flush(disk.name, t0)
      })
    },
    // Guest TRIM arrives here (QEMU's raw driver: PUNCH_HOLE|KEEP_SIZE); see Agent.fallocate.
    fallocate (path: string, fh: number, mode: number, offset: number, length: number, cb: (code: number) => void) {
      if (inSnapshots(path)) return cb(EROFS)
      run('fallocate', cb, () => agent.fallocate(fh, mode, offset, length))
    },
    // SEEK_DATA/SEEK_HOLE (our fuse-native build answers FUSE_LSEEK outside libfuse 2, which has
    // no such operation: hence no path, the handle names the file). Holes are whole disk blocks
    // no node holds a version of, as in st_blocks and NBD block status.
    lseek (fh: number, offset: number, whence: number, cb: (code: number, offset?: number) => void) {
      const want = SEEK_WHENCE[whence]
      if (want === undefined) return cb(EINVAL)
      run<number | null>('lseek', (code, at) => cb(code, at ?? undefined), async () => await seekAllocation(agent.allocation(fh), offset, want), at => at === null ? [ENXIO] : [0, at])
    },
    truncate (path: string, size: number, cb: (code: number) => void) {
      if (inSnapshots(path)) return cb(EROFS)
      const name = diskName(path)
      if (name === null) return cb(Fuse.ENOENT)
      run('truncate', cb, () => agent.truncate(name, size))
    },
    ftruncate (path: string, _fh: number, size: number, cb: (code: number) => void) {
      if (inSnapshots(path)) return cb(EROFS)
      const name = diskName(path)
      if (name === null) return cb(Fuse.ENOENT)
      run('ftruncate', cb, () => agent.truncate(name, size))
    },
    unlink (path: string, cb: (code: number) => void) {
      if (inSnapshots(path)) return cb(EROFS)
      const name = diskName(path)
      if (name === null) return cb(Fuse.ENOENT)
      run('unlink', cb, () => agent.unlink(name))
    },
    // Owner, mode and xattrs are stored with the disk (the kernel checks who may change them:
    // default_permissions). Times are not stored; accepting them keeps cp and qemu-img happy.
    chmod (path: string, mode: number, cb: (code: number) => void) {
      withDisk(path, inSnapshots(path) ? EROFS : EOPNOTSUPP, cb, name => run('chmod', cb, () => agent.chmod(name, mode)))
    },
    chown (path: string, uid: number, gid: number, cb: (code: number) => void) {
      withDisk(path, inSnapshots(path) ? EROFS : EOPNOTSUPP, cb, name => run('chown', cb, () => agent.chown(name, uid, gid)))
    },
    utimens (_path: string, _atime: number, _mtime: number, cb: (code: number) => void) { cb(0) },
    getxattr (path: string, attr: string, _position: number, cb: (code: number, value?: Buffer) => void) {
      withDisk(path, ENODATA, cb, name => run('getxattr', cb, () => agent.getxattr(name, attr)))
    },
    listxattr (path: string, cb: (code: number, names?: string[]) => void) {
      if (path === '/' || inSnapshots(path)) return cb(0, [])
      withDisk(path, 0, cb, name => run('listxattr', cb, () => agent.listxattr(name)))
    },
    setxattr (path: string, attr: string, value: Buffer, _position: number, flags: number, cb: (code: number) => void) {
      const copy = Buffer.from(value) // libfuse's buffer: valid only until we call back
      withDisk(path, inSnapshots(path) ? EROFS : EOPNOTSUPP, cb, name => run('setxattr', cb, () => agent.setxattr(name, attr, copy, flags)))
    },
    removexattr (path: string, attr: string, cb: (code: number) => void) {
      withDisk(path, ENODATA, cb, name => run('removexattr', cb, () => agent.removexattr(name, attr)))
    },
    statfs (_path: string, cb: (code: number, st?: object) => void) {
      let total = 0
      let free = 0
      for (const n of agent.pool.list()) {
        if (n.alive === null) continue
        total += n.alive.capacityBytes
        free += n.alive.freeBytes
      }
      const bsize = 4096
      cb(0, { bsize, frsize: bsize, blocks: Math.floor(total / bsize), bfree: Math.floor(free / bsize), bavail: Math.floor(free / bsize), files: 1 << 20, ffree: 1 << 20, favail: 1 << 20, fsid: 0x554b4149, flag: 0, namemax: 128 })
    }
  }

  const fuse = new Fuse(mountPoint, ops as any, {
    force: true,
    mkdir: true,
    allowOther: opts.allowOther === true,
    // The kernel checks mode, owner and group (who may open, chown, chmod, set xattrs): we
    // cannot, fuse-native does not tell us who is calling.
    defaultPermissions: true,
    fsname: ['ukai', ...LIBFUSE_EXTRA_OPTIONS, ...FUSE_NATIVE_TUNING_OPTIONS].join(','),
    subtype: 'ukai',
    timeout: FUSE_OP_TIMEOUT_MS
  })
  return new Promise((resolve, reject) => {
    fuse.mount((err: Error | null) => err ? reject(err) : resolve(fuse))
  })
}

export function unmountFuse (fuse: Fuse): Promise<void> {
  return new Promise((resolve, reject) => fuse.unmount((err: Error | null) => err ? reject(err) : resolve()))
}
