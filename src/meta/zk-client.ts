// Promise wrapper over node-zookeeper-client that owns the session: it connects with a deadline,
// rides through connection loss (the library reconnects within the session), and on session
// expiry opens a new session and asks its owners to re-create their ephemerals.
// ZooKeeper error codes are translated to UkaiError here and nowhere else.
import { EventEmitter } from 'node:events'
import zookeeper from 'node-zookeeper-client'
import { UkaiError } from '../errors'
import { Logger, silentLogger } from '../log'

export const ZK_CONNECT_TIMEOUT_MS_DEFAULT = 5000
export const ZK_SESSION_TIMEOUT_MS_DEFAULT = 10000
// How long an operation waits for a lost connection to come back before failing.
const ZK_OP_TIMEOUT_MS = 15000
// One library call that has not answered in this long is given up on (and the session replaced):
// a request caught in a reconnect can otherwise wait forever.
const ZK_ATTEMPT_TIMEOUT_MS = 8000
const RECONNECT_OVERDUE_FACTOR = 1.5

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
  logger?: Logger
}

const X = zookeeper.Exception

function translate (err: unknown, path: string, connectString: string): UkaiError {
  if (err instanceof UkaiError) return err
  const code = typeof (err as any)?.getCode === 'function' ? (err as any).getCode() : undefined
  switch (code) {
    case X.NO_NODE: return new UkaiError('NOT_FOUND', `no such metadata entry ${path}`, err)
    case X.NODE_EXISTS: return new UkaiError('ALREADY_EXISTS', `metadata entry ${path} already exists`, err)
    case X.BAD_VERSION: return new UkaiError('ZK_CONFLICT', `metadata entry ${path} changed concurrently`, err)
    case X.NOT_EMPTY: return new UkaiError('BUSY', `metadata entry ${path} still has children`, err)
    case X.CONNECTION_LOSS:
    case X.SESSION_EXPIRED:
    case X.OPERATION_TIMEOUT:
      return UkaiError.zkUnavailable(`ZooKeeper at ${connectString} did not answer (${String(err)})`, err)
    default:
      return new UkaiError('INTERNAL', `ZooKeeper error on ${path}: ${String(err)}`, err)
  }
}

export class ZkClient extends EventEmitter {
  readonly connectString: string
  private readonly connectTimeoutMs: number
  private readonly sessionTimeoutMs: number
  private readonly log: Logger
  private client: zookeeper.Client | null = null
  private connected = false

  get isConnected (): boolean { return this.connected }
  private closed = false
  private readyPromise: Promise<void> | null = null
  private reconnectWatchdog: NodeJS.Timeout | undefined

  constructor (opts: ZkClientOptions) {
    super()
    this.connectString = opts.connectString
    this.connectTimeoutMs = opts.connectTimeoutMs ?? ZK_CONNECT_TIMEOUT_MS_DEFAULT
    this.sessionTimeoutMs = opts.sessionTimeoutMs ?? ZK_SESSION_TIMEOUT_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
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
      this.connected = false
      this.log.warn({ zk: this.connectString }, 'ZooKeeper connection lost; reconnecting')
      this.emit('disconnected')
      // The server ends a silent session after its timeout anyway: if the library has not
      // reconnected by then, stop waiting for it and open a new session ourselves.
      clearTimeout(this.reconnectWatchdog)
      this.reconnectWatchdog = setTimeout(() => {
        if (!this.connected && this.client === client) this.replaceSession(client, 'no reconnect within the session timeout')
      }, this.sessionTimeoutMs * RECONNECT_OVERDUE_FACTOR)
      this.reconnectWatchdog.unref()
    } else if (state === zookeeper.State.SYNC_CONNECTED) {
      this.connected = true
      clearTimeout(this.reconnectWatchdog)
      this.log.info({ zk: this.connectString }, 'ZooKeeper connection re-established')
      this.emit('connected')
    } else if (state === zookeeper.State.EXPIRED) {
      this.replaceSession(client, 'session expired')
    }
  }

  // Drops the current session (its ephemerals go with it) and opens a new one; owners re-create
  // their ephemerals on 'session', lease holders learn of the loss on 'expired'.
  private replaceSession (client: zookeeper.Client, why: string): void {
    if (client !== this.client || this.closed) return
    this.connected = false
    this.client = null // first: close() below may report EXPIRED again, re-entrantly
    clearTimeout(this.reconnectWatchdog)
    this.log.warn({ zk: this.connectString, why }, 'replacing the ZooKeeper session')
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

  close (): void {
    if (this.closed) return
    this.closed = true
    clearTimeout(this.reconnectWatchdog)
    this.client?.close()
  }

  // Runs one library call; waits for the session when disconnected, up to ZK_OP_TIMEOUT_MS.
  private async call<T> (path: string, fn: (c: zookeeper.Client, cb: (err: any, ...res: any[]) => void) => void, pick: (...res: any[]) => T): Promise<T> {
    if (this.closed) throw UkaiError.zkUnavailable('ZooKeeper client is closed')
    await this.ready()
    const deadline = Date.now() + ZK_OP_TIMEOUT_MS
    for (;;) {
      const client = this.client as zookeeper.Client
      let timer: NodeJS.Timeout | undefined
      try {
        return await new Promise<T>((resolve, reject) => {
          timer = setTimeout(() => {
            this.replaceSession(client, `a call on ${path} got no answer in ${ZK_ATTEMPT_TIMEOUT_MS} ms`)
            reject(new zookeeper.Exception(X.OPERATION_TIMEOUT, 'OPERATION_TIMEOUT', path, Error))
          }, ZK_ATTEMPT_TIMEOUT_MS)
          fn(client, (err: any, ...res: any[]) => err ? reject(err) : resolve(pick(...res)))
        })
      } catch (err) {
        const code = typeof (err as any)?.getCode === 'function' ? (err as any).getCode() : undefined
        const retryable = code === X.CONNECTION_LOSS || code === X.OPERATION_TIMEOUT
        if (!retryable || Date.now() > deadline || this.closed) throw translate(err, path, this.connectString)
        await new Promise(resolve => setTimeout(resolve, 200))
        await this.ready()
      } finally {
        clearTimeout(timer)
      }
    }
  }

  async get (path: string, watcher?: Watcher): Promise<{ data: Buffer, stat: ZkStat }> {
    return await this.call(path, (c, cb) => watcher ? c.getData(path, () => watcher(), cb) : c.getData(path, cb),
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
    return await this.call(path, (c, cb) => watcher ? c.exists(path, () => watcher(), cb) : c.exists(path, cb),
      (stat: any) => stat ? toStat(stat) : null)
  }

  async children (path: string, watcher?: Watcher): Promise<string[]> {
    return await this.call(path, (c, cb) => watcher ? c.getChildren(path, () => watcher(), cb) : c.getChildren(path, cb),
      (children: string[]) => children.slice().sort())
  }

  async create (path: string, data: Buffer, opts: { ephemeral?: boolean } = {}): Promise<void> {
    const mode = opts.ephemeral === true ? zookeeper.CreateMode.EPHEMERAL : zookeeper.CreateMode.PERSISTENT
    await this.call(path, (c, cb) => c.create(path, data, mode, cb), () => undefined)
  }

  async mkdirp (path: string): Promise<void> {
    await this.call(path, (c, cb) => c.mkdirp(path, cb), () => undefined)
  }

  async set (path: string, data: Buffer, version = -1): Promise<ZkStat> {
    return await this.call(path, (c, cb) => c.setData(path, data, version, cb), (stat: any) => toStat(stat))
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
        if (o.op === 'create') tx.create(o.path, o.data, o.ephemeral === true ? zookeeper.CreateMode.EPHEMERAL : zookeeper.CreateMode.PERSISTENT)
        else if (o.op === 'set') tx.setData(o.path, o.data, o.version ?? -1)
        else if (o.op === 'check') tx.check(o.path, o.version)
        else tx.remove(o.path, o.version ?? -1)
      }
      tx.commit(cb)
    }, () => undefined)
  }
}

function toStat (stat: any): ZkStat {
  const mtime = stat?.mtime
  return {
    version: stat?.version ?? 0,
    ephemeralOwner: stat?.ephemeralOwner ?? Buffer.alloc(8),
    mtimeMs: Buffer.isBuffer(mtime) ? Number(mtime.readBigInt64BE(0)) : 0
  }
}
