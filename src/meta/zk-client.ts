// Promise wrapper over node-zookeeper-client that owns the session: it connects with a deadline,
// rides through connection loss (the library reconnects within the session, however long the
// server is away), and only when the server says the session expired opens a new one and asks
// its owners to re-create their ephemerals and re-assert their leases.
// ZooKeeper error codes are translated to UkaiError here and nowhere else.
//
// Why no session replacement on a slow call or a long disconnection (as before issue 9): a
// restarted ZooKeeper restores its sessions and restarts their timers, so a client that keeps
// reconnecting keeps its session (and every lease) through outages of any length; replacing it
// ourselves threw all of that away ~8-15 s into an outage and made writes fail.
import './zk-library-guard-apply'
import { EventEmitter } from 'node:events'
import zookeeper from 'node-zookeeper-client'
import { UkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { ZK_CODES_UNKNOWN_TO_LIBRARY, setZkGuardLogger } from './zk-library-guard'
import { sleep } from '../lib/timers'
import { Lifecycle } from '../lib/lifecycle'
import { type ZkAuth, zkDigestId } from './credentials'

export const ZK_CONNECT_TIMEOUT_MS_DEFAULT = 5000
export const ZK_SESSION_TIMEOUT_MS_DEFAULT = 10000
// How long an operation waits for ZooKeeper (a lost connection to come back, an answer) before
// it fails with ZK_UNAVAILABLE. The session is left alone: the library keeps reconnecting.
export const ZK_OP_TIMEOUT_MS_DEFAULT = 15000
const ZK_RETRY_PAUSE_MS = 200

export interface ZkStat { version: number, ephemeralOwner: Buffer, mtimeMs: number }
export type Watcher = () => void

export type ZkOp =
  | { op: 'create', path: string, data: Buffer, ephemeral?: boolean }
  | { op: 'set', path: string, data: Buffer, version?: number }
  | { op: 'check', path: string, version: number }
  | { op: 'remove', path: string, version?: number }

export interface ZkClientOptions {
  connectString: string
  connectTimeoutMs?: number
  sessionTimeoutMs?: number
  opTimeoutMs?: number
  logger?: Logger
  // Digest credentials: sent at every (re)connect, and the only identity the ACL of every znode
  // this client creates grants anything to. null: no auth, world-open znodes (--insecure-zk).
  auth: ZkAuth | null
}

const X = zookeeper.Exception

// Codes ZooKeeper 3.5+ answers for a passing condition (the call may be retried by its owner).
const TRANSIENT_UNKNOWN_CODES = new Set([-12, -13, -14, -118, -119, -122, -127])

function translate (err: unknown, path: string, connectString: string): UkaiError {
  if (err instanceof UkaiError) return err
  const code = typeof (err as any)?.getCode === 'function' ? (err as any).getCode() : undefined
  switch (code) {
    case X.NO_NODE: return new UkaiError('NOT_FOUND', `no such metadata entry ${path}`, err)
    case X.NODE_EXISTS: return new UkaiError('ALREADY_EXISTS', `metadata entry ${path} already exists`, err)
    case X.BAD_VERSION: return new UkaiError('ZK_CONFLICT', `metadata entry ${path} changed concurrently`, err)
    case X.NOT_EMPTY: return new UkaiError('BUSY', `metadata entry ${path} still has children`, err)
    case X.NO_AUTH: return new UkaiError('ZK_AUTH', `ZooKeeper at ${connectString} refused access to ${path}: its ACL does not grant these credentials (check --zk-auth / UKAI_ZK_AUTH: the cluster's credentials file)`, err)
    case X.AUTH_FAILED: return new UkaiError('ZK_AUTH', `ZooKeeper at ${connectString} rejected our credentials`, err)
    case X.INVALID_ACL: return new UkaiError('INTERNAL', `ZooKeeper at ${connectString} refused the ACL for ${path}`, err)
    case X.CONNECTION_LOSS:
    case X.SESSION_EXPIRED:
    case X.OPERATION_TIMEOUT:
      return UkaiError.zkUnavailable(`ZooKeeper at ${connectString} did not answer (${String(err)})`, err)
  }
  if (typeof code === 'number' && code in ZK_CODES_UNKNOWN_TO_LIBRARY) {
    const name = ZK_CODES_UNKNOWN_TO_LIBRARY[code]
    if (TRANSIENT_UNKNOWN_CODES.has(code)) return UkaiError.zkUnavailable(`ZooKeeper at ${connectString} answered ${name} (${code}) on ${path}; try again`, err)
    return new UkaiError('INTERNAL', `ZooKeeper answered ${name} (${code}) on ${path}`, err)
  }
  if (typeof code === 'number') return new UkaiError('INTERNAL', `ZooKeeper answered error code ${code} on ${path}, which UKAI does not know (${String(err)})`, err)
  return new UkaiError('INTERNAL', `ZooKeeper error on ${path}: ${String(err)}`, err)
}

interface InFlightRequest { client: zookeeper.Client, path: string, fail: (err: unknown) => void }

export class ZkClient extends EventEmitter {
  readonly connectString: string
  private readonly connectTimeoutMs: number
  private readonly sessionTimeoutMs: number
  private readonly opTimeoutMs: number
  private readonly log: Logger
  private readonly auth: ZkAuth | null
  // What every create passes: ALL to our digest identity only, or world-open when insecure.
  private readonly acls: zookeeper.ACL[]
  private client: zookeeper.Client | null = null
  private connected = false

  get isConnected (): boolean { return this.connected }
  private closed = false
  private readonly wrappers = new WeakMap<Watcher, () => void>()
  private readyPromise: Promise<void> | null = null
  private connectedWaiter: Promise<void> | null = null
  // Counts sessions: 1 for the first, +1 at every replacement after a real expiry.
  private sessionNumber = 0
  // Requests sent and not yet answered, with the client they went out on (see replaceSession).
  private readonly inflight = new Set<InFlightRequest>()
  get sessionGeneration (): number { return this.sessionNumber }

  constructor (opts: ZkClientOptions) {
    super()
    this.connectString = opts.connectString
    this.connectTimeoutMs = opts.connectTimeoutMs ?? ZK_CONNECT_TIMEOUT_MS_DEFAULT
    this.sessionTimeoutMs = opts.sessionTimeoutMs ?? ZK_SESSION_TIMEOUT_MS_DEFAULT
    this.opTimeoutMs = opts.opTimeoutMs ?? ZK_OP_TIMEOUT_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
    this.auth = opts.auth
    this.acls = opts.auth === null
      ? [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id('world', 'anyone'))]
      : [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id('digest', zkDigestId(opts.auth.user, opts.auth.password)))]
    if (opts.logger !== undefined) setZkGuardLogger(opts.logger)
  }

  ready (): Promise<void> {
    if (this.readyPromise === null) this.readyPromise = this.openSession()
    return this.readyPromise
  }

  // The session id as hex: what an ephemeral node's owner field holds.
  get sessionId (): string {
    return this.client === null ? '' : this.client.getSessionId().toString('hex')
  }

  private openSession (): Promise<void> {
    const client = zookeeper.createClient(this.connectString, {
      sessionTimeout: this.sessionTimeoutMs,
      spinDelay: 200,
      retries: 0
    })
    // Before connect: the library sends stored credentials at every (re)connection.
    if (this.auth !== null) client.addAuthInfo('digest', Buffer.from(`${this.auth.user}:${this.auth.password}`))
    this.client = client
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        client.removeListener('state', onState)
        client.close()
        reject(UkaiError.zkUnavailable(`cannot reach ZooKeeper at ${this.connectString} within ${this.connectTimeoutMs} ms (check --zk / UKAI_ZK)`))
      }, this.connectTimeoutMs)
      const onState = (state: zookeeper.State): void => {
        if (state === zookeeper.State.SYNC_CONNECTED || state === zookeeper.State.CONNECTED_READ_ONLY) {
          clearTimeout(timer)
          client.removeListener('state', onState)
          this.connected = true
          this.sessionNumber++
          client.on('state', (s: zookeeper.State) => this.onState(client, s))
          resolve()
        }
      }
      client.on('state', onState)
      client.connect()
    })
  }

  private onState (client: zookeeper.Client, state: zookeeper.State): void {
    if (client !== this.client || this.closed) return
    if (state === zookeeper.State.DISCONNECTED) {
      if (!this.connected) return
      this.connected = false
      this.log.warn({ zk: this.connectString }, 'ZooKeeper connection lost; reconnecting (the session and its leases are kept)')
      this.emit('disconnected')
    } else if (state === zookeeper.State.SYNC_CONNECTED) {
      this.connected = true
      this.log.info({ zk: this.connectString }, 'ZooKeeper connection re-established')
      this.emit('connected')
    } else if (state === zookeeper.State.EXPIRED) {
      this.replaceSession(client, 'session expired')
    }
  }

  // The server ended our session (its ephemerals are gone): open a new one. Owners re-create
  // their ephemerals and re-assert their leases on 'session'; 'expired' is only news.
  private replaceSession (client: zookeeper.Client, why: string): void {
    if (client !== this.client || this.closed) return
    this.connected = false
    this.client = null // first: close() below may report EXPIRED again, re-entrantly
    this.log.warn({ zk: this.connectString, why }, 'replacing the ZooKeeper session')
    // Requests sent on the old session get no answer once its client is closed (the library drops
    // them silently): fail them as a connection loss, so each call retries on the new session
    // instead of waiting out its 15 s bound (seen: a write's lease read after a SIGSTOPped agent's
    // session expired, EIO after 15 s).
    for (const req of this.inflight) {
      if (req.client !== client) continue
      this.inflight.delete(req)
      req.fail(new zookeeper.Exception(X.CONNECTION_LOSS, 'CONNECTION_LOSS', req.path, Error))
    }
    client.close()
    this.reopen()
    this.emit('expired')
  }

  private reopen (): void {
    if (this.closed) return
    this.readyPromise = this.openSession()
    this.readyPromise.then(() => {
      this.log.info({ zk: this.connectString }, 'ZooKeeper session re-established')
      this.emit('session')
    }, (err) => {
      this.log.error({ err: String(err) }, 'ZooKeeper still unreachable; retrying')
      setTimeout(() => this.reopen(), 1000).unref()
    })
  }

  // Closes the session (its ephemerals go). No open step here: ready() above is the connect,
  // which a lost session repeats; a close while connecting closes the connecting client.
  private readonly life = new Lifecycle({
    release: () => {
      this.closed = true
      this.client?.close()
    }
  })

  close (): Promise<void> { return this.life.close() }

  // Runs one library call; waits for the connection when disconnected, up to opTimeoutMs, then
  // fails with ZK_UNAVAILABLE. The library keeps a request it could not send queued until it
  // reconnects; one we gave up on may still apply later (the owners' conditional updates and
  // re-reads cope, as with any connection loss).
  private async call<T> (path: string, fn: (c: zookeeper.Client, cb: (err: any, ...res: any[]) => void) => void, pick: (...res: any[]) => T, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) throw UkaiError.zkUnavailable('ZooKeeper client is closed')
    const timeoutMs = opts.timeoutMs ?? this.opTimeoutMs
    const deadline = Date.now() + timeoutMs
    const timedOut = (): UkaiError => UkaiError.zkUnavailable(`ZooKeeper at ${this.connectString} did not answer on ${path} within ${timeoutMs} ms`)
    for (;;) {
      const left = deadline - Date.now()
      if (left <= 0) throw timedOut()
      let timer: NodeJS.Timeout | undefined
      let expired = false
      let req: InFlightRequest | undefined
      try {
        return await new Promise<T>((resolve, reject) => {
          timer = setTimeout(() => { expired = true; reject(timedOut()) }, left)
          // A session being replaced (after a real expiry) is waited for like a reconnect.
          this.ready().then(async () => await this.untilConnected()).then(() => {
            const client = this.client
            if (client === null) { reject(new zookeeper.Exception(X.CONNECTION_LOSS, 'CONNECTION_LOSS', path, Error)); return }
            req = { client, path, fail: reject }
            this.inflight.add(req)
            fn(client, (err: any, ...res: any[]) => err ? reject(err) : resolve(pick(...res)))
          }, reject)
        })
      } catch (err) {
        if (expired) throw err
        const code = typeof (err as any)?.getCode === 'function' ? (err as any).getCode() : undefined
        // Connection loss and a session expiry both end when the (new) session is there.
        const retryable = code === X.CONNECTION_LOSS || code === X.OPERATION_TIMEOUT || code === X.SESSION_EXPIRED || (err instanceof UkaiError && err.code === 'ZK_UNAVAILABLE')
        if (!retryable || Date.now() + ZK_RETRY_PAUSE_MS >= deadline || this.closed) throw translate(err, path, this.connectString)
        await sleep(ZK_RETRY_PAUSE_MS)
      } finally {
        clearTimeout(timer)
        if (req !== undefined) this.inflight.delete(req)
      }
    }
  }

  // With credentials, a request is handed to the library only while connected. The library
  // queues what it is given while disconnected, and at a reconnect it queues our credentials
  // (AuthPacket) behind that queue: those requests then reach the server before the credentials
  // and are refused NO_AUTH (seen: after a ZooKeeper restart, the agent's open record and the
  // controller's reads failed "refused access" for good). Given after SYNC_CONNECTED, a request
  // goes out behind the credentials. Without credentials the order does not matter.
  // One waiter shared by every request (no listener per request: an outage can hold hundreds).
  private untilConnected (): Promise<void> {
    if (this.auth === null || this.connected) return Promise.resolve()
    this.connectedWaiter ??= new Promise(resolve => {
      const onConnected = (): void => {
        this.off('connected', onConnected)
        this.off('session', onConnected)
        this.connectedWaiter = null
        resolve()
      }
      this.on('connected', onConnected)
      this.on('session', onConnected)
    })
    return this.connectedWaiter
  }

  // The function the library is given for `watcher`: always the same one. The library keeps a
  // watcher per znode until the znode changes and skips one it holds already — by identity, so a
  // fresh wrapper per call defeated that, and a caller re-arming one watcher on a znode that does
  // not change piled up listeners (MaxListenersExceededWarning).
  private wrapped (watcher: Watcher): () => void {
    let w = this.wrappers.get(watcher)
    if (w === undefined) {
      w = () => watcher()
      this.wrappers.set(watcher, w)
    }
    return w
  }

  async get (path: string, watcher?: Watcher): Promise<{ data: Buffer, stat: ZkStat }> {
    return await this.call(path, (c, cb) => watcher ? c.getData(path, this.wrapped(watcher), cb) : c.getData(path, cb),
      (data: Buffer | undefined, stat: any) => ({ data: data ?? Buffer.alloc(0), stat: toStat(stat) }))
  }

  async getOrNull (path: string, watcher?: Watcher): Promise<{ data: Buffer, stat: ZkStat } | null> {
    try {
      return await this.get(path, watcher)
    } catch (err) {
      if ((err as UkaiError).code === 'NOT_FOUND') {
        if (watcher) await this.exists(path, watcher)
        return null
      }
      throw err
    }
  }

  async exists (path: string, watcher?: Watcher): Promise<ZkStat | null> {
    return await this.call(path, (c, cb) => watcher ? c.exists(path, this.wrapped(watcher), cb) : c.exists(path, cb),
      (stat: any) => stat ? toStat(stat) : null)
  }

  async children (path: string, watcher?: Watcher): Promise<string[]> {
    return await this.call(path, (c, cb) => watcher ? c.getChildren(path, this.wrapped(watcher), cb) : c.getChildren(path, cb),
      (children: string[]) => children.slice().sort())
  }

  // Returns the created path (with a sequential znode, the name ZooKeeper gave it).
  async create (path: string, data: Buffer, opts: { ephemeral?: boolean, sequential?: boolean } = {}): Promise<string> {
    const mode = opts.sequential === true
      ? (opts.ephemeral === true ? zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL : zookeeper.CreateMode.PERSISTENT_SEQUENTIAL)
      : (opts.ephemeral === true ? zookeeper.CreateMode.EPHEMERAL : zookeeper.CreateMode.PERSISTENT)
    return await this.call(path, (c, cb) => c.create(path, data, this.acls, mode, cb), (created: string | undefined) => created ?? path)
  }

  async mkdirp (path: string): Promise<void> {
    await this.call(path, (c, cb) => c.mkdirp(path, this.acls, cb), () => undefined)
  }

  // A znode's ACL as a comparable key ('scheme:id:perms,…'), see ownAclKey.
  async getAcl (path: string): Promise<{ key: string }> {
    return await this.call(path, (c, cb) => c.getACL(path, cb), (acls: zookeeper.ACL[]) => ({ key: aclKey(acls) }))
  }

  async ownAclKey (): Promise<string> { return aclKey(this.acls) }

  // Puts this client's ACL on PATH (see `ukai zk secure`).
  async setOwnAcl (path: string): Promise<void> {
    await this.call(path, (c, cb) => c.setACL(path, this.acls, -1, cb), () => undefined)
  }

  async set (path: string, data: Buffer, version = -1, opts: { timeoutMs?: number } = {}): Promise<ZkStat> {
    return await this.call(path, (c, cb) => c.setData(path, data, version, cb), (stat: any) => toStat(stat), opts)
  }

  async remove (path: string, version = -1): Promise<void> {
    await this.call(path, (c, cb) => c.remove(path, version, cb), () => undefined)
  }

  // All-or-nothing: either every op applies or none does.
  async multi (ops: ZkOp[]): Promise<void> {
    if (ops.length === 0) return
    const where = ops.map(o => o.path).join(', ')
    await this.call(where, (c, cb) => {
      const tx = c.transaction()
      for (const o of ops) {
        if (o.op === 'create') tx.create(o.path, o.data, this.acls, o.ephemeral === true ? zookeeper.CreateMode.EPHEMERAL : zookeeper.CreateMode.PERSISTENT)
        else if (o.op === 'set') tx.setData(o.path, o.data, o.version ?? -1)
        else if (o.op === 'check') tx.check(o.path, o.version)
        else tx.remove(o.path, o.version ?? -1)
      }
      tx.commit(cb)
    }, () => undefined)
  }
}

function aclKey (acls: zookeeper.ACL[]): string {
  // The library's ACL objects name the permission bits `permission` (its typings say `perms`).
  return acls.map(a => `${a.id.scheme}:${a.id.id}:${String((a as unknown as { permission?: number }).permission ?? a.perms)}`).sort().join(',')
}

function toStat (stat: any): ZkStat {
  const mtime = stat?.mtime
  return {
    version: stat?.version ?? 0,
    ephemeralOwner: stat?.ephemeralOwner ?? Buffer.alloc(8),
    mtimeMs: Buffer.isBuffer(mtime) ? Number(mtime.readBigInt64BE(0)) : 0
  }
}
