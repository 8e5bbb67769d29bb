// The ephemeral znodes a MetaStore holds (node liveness, open records, round-trip reports):
// created now and again after every session replacement, until dropped; created and removed
// later, when ZooKeeper is back, rather than hanging a caller while it is away (issue 9: an
// open must not hang on its open record, a close must not hang on its removal).
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger } from '../log'
import { ZkClient } from './zk-client'

export class HeldEphemerals {
  private readonly held = new Map<string, () => Buffer>()
  // Ephemerals dropped while ZooKeeper was away, removed when it is back.
  private readonly removals = new Set<string>()

  constructor (private readonly zk: ZkClient, private readonly log: Logger) {
    zk.on('session', () => { this.recreateAll().catch(safetyCatch) })
  }

  has (path: string): boolean { return this.held.has(path) }

  // What a held ephemeral is re-created with from now on (its znode is set by the caller).
  replaceData (path: string, data: () => Buffer): void { this.held.set(path, data) }

  // Creates an ephemeral node now and again after every session replacement, until dropped.
  // With `waitMs`, ZooKeeper trouble does not hold the caller up: while it is away, or when the
  // creation takes longer than that (the connection dropped meanwhile), it is created when the
  // connection is back (or with the new session) — an open of a cached disk must not hang on its
  // open record.
  async hold (path: string, data: () => Buffer, opts: { waitMs?: number } = {}): Promise<void> {
    this.held.set(path, data)
    this.removals.delete(path)
    if (opts.waitMs === undefined) { await this.createEphemeral(path, data()); return }
    if (!this.zk.isConnected) { this.createLater(path); return }
    const outcome: Promise<unknown> = this.createEphemeral(path, data()).then(() => 'created', (err: unknown) => err)
    let timer: NodeJS.Timeout | undefined
    const first = await Promise.race([outcome, new Promise(resolve => { timer = setTimeout(() => resolve('waiting'), opts.waitMs) })])
    clearTimeout(timer)
    if (first === 'created') return
    if (first === 'waiting') {
      this.log.warn({ path, waitMs: opts.waitMs }, 'ZooKeeper is slow: the ephemeral is created in the background')
      outcome.then((r) => { if (r !== 'created') { safetyCatch(r); this.createLater(path) } }).catch(safetyCatch)
      return
    }
    if (isUkaiError(first, 'ZK_UNAVAILABLE')) { this.createLater(path); return }
    throw first
  }

  private createLater (path: string): void {
    this.log.warn({ path }, 'ZooKeeper is away: the ephemeral is created when it is back')
    this.zk.once('connected', () => {
      const data = this.held.get(path)
      if (data === undefined) return
      this.createEphemeral(path, data()).catch((err) => {
        safetyCatch(err)
        this.log.error({ path, err: String(err) }, 'could not create ephemeral after reconnecting')
      })
    })
  }

  // Stops re-creating the ephemeral and removes it. While ZooKeeper is away the removal is left
  // for when it is back (retried on reconnect) rather than waited for: a close must not hang.
  async drop (path: string): Promise<void> {
    this.held.delete(path)
    if (!this.zk.isConnected) { this.removeLater(path); return }
    try {
      await this.zk.remove(path)
    } catch (err) {
      if (isUkaiError(err, 'ZK_UNAVAILABLE')) { this.removeLater(path); return }
      if ((err as UkaiError).code !== 'NOT_FOUND') throw err
    }
  }

  private removeLater (path: string): void {
    if (this.removals.has(path)) return
    this.removals.add(path)
    const attempt = (): void => {
      if (!this.removals.has(path)) return
      if (this.held.has(path)) { this.removals.delete(path); return } // held again meanwhile
      this.zk.remove(path).then(() => { this.removals.delete(path) }, (err) => {
        if (isUkaiError(err, 'NOT_FOUND')) this.removals.delete(path)
        else this.zk.once('connected', attempt)
      }).catch(safetyCatch)
    }
    this.zk.once('connected', attempt)
  }

  // Creates our ephemeral at `path`. One already there is ours when our session owns it (a
  // concurrent re-creation: its data is updated), else a leftover of our previous session (or a
  // twin of this host) that is replaced — never reported as ALREADY_EXISTS (issue 9: an open
  // right after ZooKeeper returned failed with EEXIST on the old session's open record).
  private async createEphemeral (path: string, data: Buffer): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.zk.create(path, data, { ephemeral: true })
        return
      } catch (err) {
        if (!isUkaiError(err, 'ALREADY_EXISTS') || attempt >= 5) throw err
      }
      const cur = await this.zk.exists(path)
      if (cur === null) continue
      try {
        if (cur.ephemeralOwner.toString('hex') === this.zk.sessionId) {
          await this.zk.set(path, data, cur.version)
          return
        }
        await this.zk.remove(path, cur.version)
      } catch (err) {
        if (!isUkaiError(err, 'NOT_FOUND') && !isUkaiError(err, 'ZK_CONFLICT')) throw err
      }
    }
  }

  private async recreateAll (): Promise<void> {
    for (const [path, data] of this.held) {
      try {
        await this.createEphemeral(path, data())
      } catch (err) {
        this.log.error({ path, err: String(err) }, 'could not re-create ephemeral after session expiry')
      }
    }
  }
}
