// The agent's NBD server: a Unix socket per disk (DIR/<disk>.sock, created as disks appear and
// removed as they go, permissions following the disk file's) and optionally one TCP listener
// where the export name is the disk's name. Both serve DISK@SNAP read-only.
//
// Socket permissions: connecting to a Unix socket needs write permission on it, and whoever
// connects can write the disk — so a class (owner, group, others) gets rw on the socket exactly
// when it may write the disk file; a class that may only read the file cannot connect (there is
// no read-only connection to ask for). The owner and group are the disk file's when the agent
// may set them (root, or its own), else the agent's (logged once per disk).
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { Logger } from '../log'
import { safetyCatch } from '../errors'
import { DiskFileOwner, parseSnapshotRef } from '../meta/schema'
import { NbdExportSource } from './agent-exports'
import { ExportScope, NbdSession } from './session'

export const NBD_SOCKET_SUFFIX = '.sock'
// sun_path is 108 bytes with its NUL.
const UNIX_PATH_BYTES_MAX = 107

export interface NbdServerOptions {
  exports: NbdExportSource
  socketDir?: string                                   // --nbd-dir
  listen?: { host: string, port: number }              // --nbd-listen
  owner: (disk: string) => Promise<DiskFileOwner | null> // the disk file's owner and mode (null: gone)
  logger: Logger
}

interface DiskSocket { server: net.Server, path: string, applied: string }

export class NbdServer {
  private readonly exports: NbdExportSource
  private readonly dir: string | undefined
  private readonly listenAt: NbdServerOptions['listen']
  private readonly owner: NbdServerOptions['owner']
  private readonly log: Logger
  private readonly sockets = new Map<string, DiskSocket>()
  private readonly sessions = new Set<NbdSession>()
  private tcp: net.Server | null = null
  private syncing: Promise<void> = Promise.resolve()
  private syncAgain = false
  private syncQueued = false
  private closed = false
  private readonly ownerWarned = new Set<string>()

  constructor (opts: NbdServerOptions) {
    this.exports = opts.exports
    this.dir = opts.socketDir
    this.listenAt = opts.listen
    this.owner = opts.owner
    this.log = opts.logger.child({ component: 'nbd' })
  }

  // The TCP listener's address once started (port 0 asks the kernel for one).
  get tcpAddress (): { host: string, port: number } | null {
    const a = this.tcp?.address()
    return a !== null && a !== undefined && typeof a === 'object' ? { host: a.address, port: a.port } : null
  }

  async start (): Promise<void> {
    if (this.dir !== undefined) await fs.promises.mkdir(this.dir, { recursive: true })
    if (this.listenAt !== undefined) {
      const scope: ExportScope = {
        names: () => this.exports.names(),
        resolve: (name) => name === '' || !this.exports.names().includes(name) ? null : name
      }
      const server = net.createServer(socket => this.accept(socket, scope))
      await listen(server, { host: this.listenAt.host, port: this.listenAt.port })
      this.tcp = server
      this.log.info({ address: this.tcpAddress }, 'NBD listening')
    }
    this.disksChanged()
    await this.syncing
  }

  // The disk list or a disk's owner or mode changed: bring the sockets in line (serialised).
  disksChanged (): void {
    if (this.dir === undefined || this.closed) return
    if (this.syncQueued) { this.syncAgain = true; return }
    this.syncQueued = true
    this.syncing = this.syncing.then(async () => {
      do {
        this.syncAgain = false
        await this.syncSockets().catch(err => { safetyCatch(err); this.log.error({ err: String(err) }, 'NBD socket update failed') })
      } while (this.syncAgain && !this.closed)
    }).finally(() => { this.syncQueued = false })
  }

  private async syncSockets (): Promise<void> {
    const dir = this.dir as string
    const disks = new Set(this.exports.names().filter(n => !n.includes('@')))
    for (const [disk, s] of this.sockets) {
      if (disks.has(disk) && !this.closed) continue
      this.sockets.delete(disk)
      await this.closeSocket(disk, s)
    }
    if (this.closed) return
    for (const disk of disks) {
      const owner = await this.owner(disk)
      if (owner === null) continue
      const want = socketMode(owner)
      const known = this.sockets.get(disk)
      if (known !== undefined) {
        if (known.applied !== ownerKey(owner)) {
          await this.applyOwner(disk, known.path, owner, want)
          known.applied = ownerKey(owner)
        }
        continue
      }
      const file = path.join(dir, disk + NBD_SOCKET_SUFFIX)
      if (Buffer.byteLength(file) > UNIX_PATH_BYTES_MAX) {
        this.log.error({ disk, path: file }, 'NBD socket path too long for a Unix socket: no socket for this disk')
        continue
      }
      try {
        const server = await this.bindDiskSocket(disk, file, owner, want)
        this.sockets.set(disk, { server, path: file, applied: ownerKey(owner) })
      } catch (err) {
        safetyCatch(err)
        this.log.error({ disk, path: file, err: String(err) }, 'could not create the NBD socket')
      }
    }
  }

  // Bound under a temporary name, given its mode and owner, then renamed into place: nobody can
  // connect through a socket whose permissions are not yet the disk's.
  private async bindDiskSocket (disk: string, file: string, owner: DiskFileOwner, mode: number): Promise<net.Server> {
    const tmp = path.join(path.dirname(file), `.${disk}.${process.pid}.tmp`)
    await removeSocket(tmp)
    const scope: ExportScope = {
      names: () => this.exports.names().filter(n => n === disk || (n.includes('@') && parseSnapshotRef(n).disk === disk)),
      resolve: (name) => {
        if (name === '' || name === disk) return disk
        if (!name.includes('@')) return null
        try {
          return parseSnapshotRef(name).disk === disk && this.exports.names().includes(name) ? name : null
        } catch {
          return null
        }
      }
    }
    const server = net.createServer(socket => this.accept(socket, scope))
    await listen(server, { path: tmp })
    try {
      await this.applyOwner(disk, tmp, owner, mode)
      await removeSocket(file) // a socket a crashed agent left behind
      await fs.promises.rename(tmp, file)
    } catch (err) {
      server.close()
      await removeSocket(tmp)
      throw err
    }
    this.log.info({ disk, path: file, mode: mode.toString(8) }, 'NBD socket ready')
    return server
  }

  private async applyOwner (disk: string, file: string, owner: DiskFileOwner, mode: number): Promise<void> {
    try {
      await fs.promises.chown(file, owner.uid, owner.gid)
    } catch (err) {
      if (!this.ownerWarned.has(disk)) {
        this.ownerWarned.add(disk)
        this.log.warn({ disk, uid: owner.uid, gid: owner.gid, err: String(err) }, 'NBD socket keeps the agent\'s owner (cannot give it the disk\'s)')
      }
    }
    await fs.promises.chmod(file, mode)
  }

  private async closeSocket (disk: string, s: DiskSocket): Promise<void> {
    s.server.close()
    await removeSocket(s.path)
    this.log.info({ disk, path: s.path }, 'NBD socket removed')
  }

  private accept (socket: net.Socket, scope: ExportScope): void {
    if (this.closed) { socket.destroy(); return }
    const session = new NbdSession({ socket, exports: this.exports, scope, logger: this.log })
    this.sessions.add(session)
    session.run().finally(() => this.sessions.delete(session)).catch(safetyCatch)
  }

  // Stop accepting, let every connection finish the requests it took (and close its export:
  // flush, lease), remove the sockets.
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.tcp?.close()
    await this.syncing
    for (const [disk, s] of this.sockets) await this.closeSocket(disk, s)
    this.sockets.clear()
    await Promise.all([...this.sessions].map(async s => await s.stop()))
  }
}

// rw for each class that may write the disk file, nothing else.
export function socketMode (owner: DiskFileOwner): number {
  let mode = 0
  if ((owner.mode & 0o200) !== 0) mode |= 0o600
  if ((owner.mode & 0o020) !== 0) mode |= 0o060
  if ((owner.mode & 0o002) !== 0) mode |= 0o006
  return mode
}

function ownerKey (o: DiskFileOwner): string { return `${o.uid}:${o.gid}:${o.mode}` }

async function listen (server: net.Server, at: net.ListenOptions): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(at, () => { server.off('error', reject); resolve() })
  })
}

// Removes a Unix socket at `file`; anything else there is left alone (and reported by the bind).
async function removeSocket (file: string): Promise<void> {
  try {
    const st = await fs.promises.lstat(file)
    if (st.isSocket()) await fs.promises.unlink(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
}
