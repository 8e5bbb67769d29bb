// The controller's leader election (ZooKeeper's recipe): every candidate creates an ephemeral
// sequential znode under /ukai/controller/election and watches only its predecessor, so a
// leader's death wakes exactly one standby (no herd) and it leads as soon as ZooKeeper removes
// the dead session's znode — the session timeout, 10 s by default.
//
// Never two leaders acting: a leader stops (deposed) the moment its session is reported expired,
// and also when ZooKeeper stays unreachable for SUSPEND_AFTER_MS: a disconnected leader cannot
// know whether its session still lives, and its successor may be elected once the server times
// the session out. Everything a duty changes is a conditional ZooKeeper transaction or carries a
// fencing epoch besides (relocate/run-here.ts), so a leader that has not noticed yet cannot undo
// its successor's work; stopping early only keeps the two from racing for nothing.
//
// The znode's name starts with the session id, so a create retried after a connection loss
// (the client retries by itself) is recognised: a second znode of our session is removed instead
// of being watched as our own predecessor for ever.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import {
  ControllerCandidate, ControllerDutyStatus, ControllerLeader, candidatePrefix, candidateSequence, decodeJson, encodeJson, paths
} from './schema'
import { MetaStore, zkOf } from './store'
import { ZK_SESSION_TIMEOUT_MS_DEFAULT } from './zk-client'

// A leader that has not reached ZooKeeper for this long steps down (before its session can have
// expired on the server: two thirds of the default session timeout).
export const ELECTION_SUSPEND_AFTER_MS_DEFAULT = Math.floor(ZK_SESSION_TIMEOUT_MS_DEFAULT * 2 / 3)
// A failed election step (ZooKeeper away longer than a call's bound) is tried again this much later.
const ELECTION_RETRY_MS = 1000

export interface ElectionHooks {
  elected: (leaderSinceMs: number) => void
  deposed: (why: string) => void
}

export class Election {
  private readonly meta: MetaStore
  private readonly candidate: ControllerCandidate
  private readonly hooks: ElectionHooks
  private readonly log: Logger
  private readonly suspendAfterMs: number
  private ownName: string | null = null
  private leaderSinceMs: number | null = null
  private suspendTimer: NodeJS.Timeout | null = null
  private generation = 0   // bumps on every (re)join: an older check's result is dropped
  private closed = false
  private readonly unsubscribe: Array<() => void> = []

  constructor (opts: { meta: MetaStore, candidate: ControllerCandidate, hooks: ElectionHooks, logger?: Logger, suspendAfterMs?: number }) {
    this.meta = opts.meta
    this.candidate = opts.candidate
    this.hooks = opts.hooks
    this.log = (opts.logger ?? silentLogger).child({ component: 'election' })
    this.suspendAfterMs = opts.suspendAfterMs ?? ELECTION_SUSPEND_AFTER_MS_DEFAULT
  }

  get isLeader (): boolean { return this.leaderSinceMs !== null }

  // Joins the election; returns once our znode exists (leading or waiting).
  async start (): Promise<void> {
    const zk = zkOf(this.meta)
    const onExpired = (): void => { this.depose('the ZooKeeper session expired'); this.ownName = null; this.generation++ }
    const onSession = (): void => { this.rejoin() }
    const onDisconnected = (): void => {
      if (!this.isLeader || this.suspendTimer !== null) return
      this.suspendTimer = setTimeout(() => { this.suspendTimer = null; this.depose(`ZooKeeper unreachable for ${this.suspendAfterMs} ms`) }, this.suspendAfterMs)
      this.suspendTimer.unref()
    }
    // Back within the session: our znode is still there; check again (we may lead again).
    const onConnected = (): void => {
      if (this.suspendTimer !== null) { clearTimeout(this.suspendTimer); this.suspendTimer = null }
      if (!this.isLeader && this.ownName !== null) this.check(this.generation)
    }
    zk.on('expired', onExpired)
    zk.on('session', onSession)
    zk.on('disconnected', onDisconnected)
    zk.on('connected', onConnected)
    this.unsubscribe.push(() => { zk.off('expired', onExpired); zk.off('session', onSession); zk.off('disconnected', onDisconnected); zk.off('connected', onConnected) })
    await this.join(++this.generation)
  }

  private rejoin (): void {
    if (this.closed) return
    const gen = ++this.generation
    this.join(gen).catch((err) => {
      safetyCatch(err)
      this.log.warn({ err: String(err) }, 'could not join the controller election; retrying')
      setTimeout(() => { if (gen === this.generation) this.rejoin() }, ELECTION_RETRY_MS).unref()
    })
  }

  private async join (gen: number): Promise<void> {
    const zk = zkOf(this.meta)
    await zk.mkdirp(paths.controllerElection)
    const prefix = candidatePrefix(zk.sessionId)
    const created = await zk.create(paths.controllerCandidate(prefix), encodeJson(this.candidate), { ephemeral: true, sequential: true })
    if (gen !== this.generation || this.closed) { await zk.remove(created).catch(safetyCatch); return }
    this.ownName = created.slice(created.lastIndexOf('/') + 1)
    this.log.info({ candidate: this.ownName }, 'joined the controller election')
    this.check(gen)
  }

  // Leads when our znode is the lowest; else watches the next lower one and checks again when it goes.
  private check (gen: number): void {
    this.checkOnce(gen).catch((err) => {
      safetyCatch(err)
      if (gen !== this.generation || this.closed) return
      this.log.warn({ err: String(err) }, 'controller election check failed; retrying')
      setTimeout(() => this.check(gen), ELECTION_RETRY_MS).unref()
    })
  }

  private async checkOnce (gen: number): Promise<void> {
    const zk = zkOf(this.meta)
    const own = this.ownName
    if (own === null || gen !== this.generation || this.closed) return
    const prefix = candidatePrefix(zk.sessionId)
    const names = (await zk.children(paths.controllerElection)).sort((a, b) => candidateSequence(a) - candidateSequence(b))
    // A twin of our own session (a create retried after a connection loss): not a rival.
    for (const n of names) if (n !== own && n.startsWith(prefix)) await zk.remove(paths.controllerCandidate(n)).catch(safetyCatch)
    const live = names.filter(n => n === own || !n.startsWith(prefix))
    const at = live.indexOf(own)
    if (at < 0) { this.rejoin(); return }  // our znode is gone (removed by hand?): join again
    if (at === 0) { await this.lead(gen); return }
    const predecessor = live[at - 1]
    const stat = await zk.exists(paths.controllerCandidate(predecessor), () => { if (gen === this.generation) this.check(gen) })
    if (stat === null) this.check(gen)
    else this.log.info({ candidate: own, waitsFor: predecessor }, 'standing by as controller')
  }

  private async lead (gen: number): Promise<void> {
    if (this.isLeader || gen !== this.generation || this.closed) return
    const since = Date.now()
    await writeLeaderRecord(this.meta, { ...this.candidate, leaderSinceMs: since, updatedAtMs: since, duties: [] })
    if (gen !== this.generation || this.closed) return
    this.leaderSinceMs = since
    this.log.info({ candidate: this.ownName }, 'elected controller leader')
    this.hooks.elected(since)
  }

  private depose (why: string): void {
    if (this.suspendTimer !== null) { clearTimeout(this.suspendTimer); this.suspendTimer = null }
    if (this.leaderSinceMs === null) return
    this.leaderSinceMs = null
    this.log.warn({ why }, 'no longer the controller leader')
    this.hooks.deposed(why)
  }

  // What the leader's duties are doing, for `ukai controller status`; only while leading.
  async report (duties: ControllerDutyStatus[]): Promise<void> {
    if (this.leaderSinceMs === null || !this.meta.isConnected) return
    await writeLeaderRecord(this.meta, { ...this.candidate, leaderSinceMs: this.leaderSinceMs, updatedAtMs: Date.now(), duties })
  }

  // Leaves the election: the leader record first (a standby's takes its place), then our znode.
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.generation++
    for (const u of this.unsubscribe) u()
    const zk = zkOf(this.meta)
    const wasLeader = this.isLeader
    this.depose('closing')
    if (wasLeader) await removeOwnLeaderRecord(this.meta).catch(safetyCatch)
    if (this.ownName !== null) await zk.remove(paths.controllerCandidate(this.ownName)).catch((err) => { if (!isUkaiError(err, 'NOT_FOUND')) safetyCatch(err) })
    this.ownName = null
  }
}

// The leader record is an ephemeral of the leader's session: one left by a dead leader vanishes
// with its session (which also removed its election znode, so a successor never meets it unless
// that session is still alive, and then the successor is not elected).
async function writeLeaderRecord (meta: MetaStore, rec: ControllerLeader): Promise<void> {
  const zk = zkOf(meta)
  const data = encodeJson(rec)
  const cur = await zk.exists(paths.controllerLeader)
  if (cur !== null && cur.ephemeralOwner.toString('hex') === zk.sessionId) { await zk.set(paths.controllerLeader, data, cur.version); return }
  if (cur !== null) await zk.remove(paths.controllerLeader, cur.version).catch((err) => { if (!isUkaiError(err, 'NOT_FOUND')) throw err })
  await zk.create(paths.controllerLeader, data, { ephemeral: true })
}

async function removeOwnLeaderRecord (meta: MetaStore): Promise<void> {
  const zk = zkOf(meta)
  const cur = await zk.exists(paths.controllerLeader)
  if (cur !== null && cur.ephemeralOwner.toString('hex') === zk.sessionId) await zk.remove(paths.controllerLeader, cur.version)
}

// Who leads (null: nobody right now), and every candidate in the order they would take over.
export async function readControllerState (meta: MetaStore): Promise<{ leader: ControllerLeader | null, candidates: Array<ControllerCandidate & { name: string }> }> {
  const zk = zkOf(meta)
  const got = await zk.getOrNull(paths.controllerLeader)
  let leader: ControllerLeader | null = null
  if (got !== null) {
    try { leader = decodeJson<ControllerLeader>(got.data, 'controller leader record') } catch (err) { if (!(err instanceof UkaiError)) throw err }
  }
  const exists = await zk.exists(paths.controllerElection)
  const names = exists === null ? [] : (await zk.children(paths.controllerElection)).sort((a, b) => candidateSequence(a) - candidateSequence(b))
  const candidates: Array<ControllerCandidate & { name: string }> = []
  for (const name of names) {
    const c = await zk.getOrNull(paths.controllerCandidate(name))
    if (c === null) continue
    try { candidates.push({ ...decodeJson<ControllerCandidate>(c.data, 'controller candidate'), name }) } catch (err) { if (!(err instanceof UkaiError)) throw err }
  }
  return { leader, candidates }
}
