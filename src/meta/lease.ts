// The write lease of a disk: one ephemeral znode naming the holder, plus a persistent fence
// record whose lease epoch grows by one with every acquisition. Both change in one transaction,
// so an epoch is never handed out twice. Storage nodes refuse writes carrying an older epoch.
//
// Hand-over is cooperative first: the requester leaves a handover request; the holder flushes and
// releases. If the holder does not release within the timeout (or its session is gone, which
// removes the ephemeral by itself), the requester deletes the lease and takes it by force.
//
// ZooKeeper away (issue 9): a holder keeps its lease — and keeps writing under its epoch — while
// ZooKeeper is unreachable, however long. That is safe because the storage nodes fence: whoever
// takes the lease meanwhile bumps the fence epoch and sends Fence(epoch) to every node before it
// writes, so our next write is refused (FENCED) and we drop the lease. When our session really
// expired, the lease znode went with it: on the new session each held lease is re-asserted in
// one multi (the fence still at our epoch, the ephemeral re-created); if the fence moved, someone
// took over and the lease is lost. Only that, a FENCED answer, or a deliberate removal of our
// znode within a live session ends a lease.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { FenceRecord, HandoverRequest, LeaseRecord, decodeJson, encodeJson, paths } from './schema'
import { MetaStore, zkOf } from './store'
import { ZkClient, ZkOp } from './zk-client'
import { sleep } from '../lib/timers'

export const LEASE_HANDOVER_TIMEOUT_MS_DEFAULT = 5000
// Pause between attempts to re-assert leases on a new session while ZooKeeper still fails.
const REASSERT_RETRY_MS = 1000
// How long a release waits for its znode's removal before going on without it (see release).
const RELEASE_WAIT_MS = 1000

export interface LeaseInfo { holder: LeaseRecord | null, fenceEpoch: number }

export async function readLease (meta: MetaStore, disk: string): Promise<LeaseInfo> {
  const zk = zkOf(meta)
  const fence = await zk.getOrNull(paths.fence(disk))
  if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
  const lease = await zk.getOrNull(paths.lease(disk))
  return {
    holder: lease === null ? null : decodeJson<LeaseRecord>(lease.data, `lease of ${disk}`),
    fenceEpoch: decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch
  }
}

// The cooperative half of a hand-over: leaves a request the holder's LeaseManager sees (its
// watch calls onHandoverRequested; it flushes and releases). Ephemeral, so a requester that dies
// takes its request along. False when a request is there already (someone else asked: the
// caller waits with them and must not withdraw theirs).
export async function requestHandover (meta: MetaStore, disk: string, requester: string): Promise<boolean> {
  const req: HandoverRequest = { v: 1, host: requester, requestedAtMs: Date.now() }
  try {
    await zkOf(meta).create(paths.handover(disk), encodeJson(req), { ephemeral: true })
    return true
  } catch (err) {
    if (isUkaiError(err, 'ALREADY_EXISTS')) return false
    throw err
  }
}

// The requester name of a request that only asks the holder to let go (finish-migration on the
// source): nobody waits to acquire behind it.
export function releaseOnlyRequester (host: string): string { return `${host}.finish-migration` }

// Removes the disk's hand-over request (once answered, or given up on).
export async function withdrawHandover (meta: MetaStore, disk: string): Promise<void> {
  await zkOf(meta).remove(paths.handover(disk))
}

// A lease epoch without the lease, for background work that copies but never writes a guest's
// bytes (an orphaned relocation, run-here.ts): the fence epoch moves up by one, as at a lease
// acquisition, so every writer of an older epoch is refused by the nodes fenced with it; but no
// lease znode is created, so a VM that starts writing takes the lease at once (no hand-over to
// wait for) — and by that moves the fence again. `fenceVersion` is the fence znode's version
// that holds our epoch: a map change conditional on it (DiskMap's fence guard) commits only
// while nobody took a newer epoch. Null when the disk has a lease holder (it runs the work).
// The same transaction creates and removes the lease znode: it fails while a lease exists, so
// a holder re-asserting its lease on a new session cannot slip in between our read and the bump.
export interface FencingEpoch { readonly disk: string, readonly leaseEpoch: number, readonly fenceVersion: number }

export async function takeFencingEpoch (meta: MetaStore, disk: string): Promise<FencingEpoch | null> {
  const zk = zkOf(meta)
  for (;;) {
    const fence = await zk.getOrNull(paths.fence(disk))
    if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
    if (await zk.getOrNull(paths.lease(disk)) !== null) return null
    const leaseEpoch = decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch + 1
    try {
      await zk.multi([
        { op: 'set', path: paths.fence(disk), data: encodeJson({ v: 1, leaseEpoch } satisfies FenceRecord), version: fence.stat.version },
        { op: 'create', path: paths.lease(disk), data: Buffer.alloc(0) },
        { op: 'remove', path: paths.lease(disk) }
      ])
      return { disk, leaseEpoch, fenceVersion: fence.stat.version + 1 }
    } catch (err) {
      // The fence moved or a lease appeared between our reads and the multi: look again.
      if (isUkaiError(err, 'ZK_CONFLICT') || isUkaiError(err, 'ALREADY_EXISTS')) continue
      throw err
    }
  }
}

export interface HeldLease {
  readonly disk: string
  readonly leaseEpoch: number
  readonly forced: boolean
}

export interface LeaseCallbacks {
  // Another host asked for the lease: flush and call release() soon.
  onHandoverRequested: (disk: string, requester: string) => void
  // The lease znode vanished without us releasing it (forced take-over, session loss).
  onLost: (disk: string) => void
  // The lease was re-asserted on a new session (same epoch): watches tied to it died with the
  // old session and are set again.
  onReasserted?: (disk: string) => void
}

export class LeaseManager {
  private readonly meta: MetaStore
  private readonly zk: ZkClient
  private readonly host: string
  private readonly handoverTimeoutMs: number
  private readonly log: Logger
  private readonly held = new Map<string, HeldLease>()
  // The session (ZkClient.sessionGeneration) whose ephemeral carries each held lease; behind the
  // current session while a lease waits to be re-asserted.
  private readonly assertedIn = new Map<string, number>()
  // Per disk: the hand-over watcher handed to ZooKeeper, and the check of the lease held now.
  private readonly handoverWatchers = new Map<string, () => void>()
  private readonly handoverChecks = new Map<string, () => void>()
  private reasserting: Promise<void> | null = null
  private reassertAgain = false
  private readonly callbacks: LeaseCallbacks

  constructor (meta: MetaStore, host: string, callbacks: LeaseCallbacks, opts: { handoverTimeoutMs?: number, logger?: Logger } = {}) {
    this.meta = meta
    this.zk = zkOf(meta)
    this.host = host
    this.callbacks = callbacks
    this.handoverTimeoutMs = opts.handoverTimeoutMs ?? LEASE_HANDOVER_TIMEOUT_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
    // A new session means our ephemeral leases are gone from ZooKeeper, not that they were
    // taken: re-assert them (see the top of this file).
    meta.onSession(() => { this.reassertAll() })
  }

  private reassertAll (): void {
    if (this.reasserting !== null) { this.reassertAgain = true; return }
    this.reasserting = (async () => {
      do {
        this.reassertAgain = false
        for (const disk of [...this.held.keys()]) {
          for (;;) {
            try {
              await this.reassert(disk)
              break
            } catch (err) {
              safetyCatch(err)
              if (!this.held.has(disk)) break
              this.log.warn({ disk, err: String(err) }, 'could not re-assert the lease yet; the holder keeps writing (the nodes fence a newer holder)')
              await sleep(REASSERT_RETRY_MS)
            }
          }
        }
      } while (this.reassertAgain)
    })().finally(() => { this.reasserting = null })
    this.reasserting.catch(safetyCatch)
  }

  // One multi: the fence still at our epoch (checked by version), our ephemeral re-created (a
  // leftover of our previous session replaced). The fence moved: someone took over.
  private async reassert (disk: string): Promise<void> {
    const zk = this.zk
    for (;;) {
      const lease = this.held.get(disk)
      const generation = zk.sessionGeneration
      if (lease === undefined || this.assertedIn.get(disk) === generation) return
      const fence = await zk.getOrNull(paths.fence(disk))
      const fenceEpoch = fence === null ? null : decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch
      if (fence === null || fenceEpoch !== lease.leaseEpoch) {
        this.log.warn({ disk, leaseEpoch: lease.leaseEpoch, fenceEpoch }, 'lease taken over while our ZooKeeper session was gone')
        this.lost(disk)
        return
      }
      const cur = await zk.getOrNull(paths.lease(disk))
      const ops: ZkOp[] = [{ op: 'check', path: paths.fence(disk), version: fence.stat.version }]
      if (cur !== null) {
        const holder = decodeJson<LeaseRecord>(cur.data, `lease of ${disk}`)
        if (holder.leaseEpoch !== lease.leaseEpoch) { this.lost(disk); return }
        if (holder.sessionId === zk.sessionId) { this.reasserted(disk, lease, generation); return }
        ops.push({ op: 'remove', path: paths.lease(disk), version: cur.stat.version })
      }
      const record: LeaseRecord = { v: 1, host: this.host, leaseEpoch: lease.leaseEpoch, sessionId: zk.sessionId, acquiredAtMs: Date.now() }
      ops.push({ op: 'create', path: paths.lease(disk), data: encodeJson(record), ephemeral: true })
      try {
        await zk.multi(ops)
      } catch (err) {
        // The fence or the lease changed between our reads and the multi: look again.
        if (isUkaiError(err, 'ZK_CONFLICT') || isUkaiError(err, 'ALREADY_EXISTS') || isUkaiError(err, 'NOT_FOUND')) continue
        throw err
      }
      if (this.held.get(disk) !== lease) return
      this.reasserted(disk, lease, generation)
      return
    }
  }

  private reasserted (disk: string, lease: HeldLease, generation: number): void {
    this.assertedIn.set(disk, generation)
    this.log.info({ disk, leaseEpoch: lease.leaseEpoch }, 'lease re-asserted on the new ZooKeeper session')
    this.watchHeld(disk, lease.leaseEpoch)
    this.callbacks.onReasserted?.(disk)
  }

  holding (disk: string): HeldLease | undefined { return this.held.get(disk) }

  // Takes the lease, asking the holder to hand over (or forcing it after the timeout).
  async acquire (disk: string, opts: { signal?: AbortSignal } = {}): Promise<HeldLease> {
    const existing = this.held.get(disk)
    if (existing !== undefined) return existing
    const zk = this.zk
    let askedAtMs = 0
    let forced = false
    for (;;) {
      opts.signal?.throwIfAborted()
      const lease = await this.takeIfFree(disk, forced)
      if (lease !== null) {
        if (askedAtMs !== 0) await withdrawHandover(this.meta, disk).catch(safetyCatch)
        return lease
      }
      // Held by someone else (or a leftover of our own expired session).
      const holderData = await zk.getOrNull(paths.lease(disk))
      if (holderData === null) continue
      const holder = decodeJson<LeaseRecord>(holderData.data, `lease of ${disk}`)
      if (askedAtMs === 0) {
        askedAtMs = Date.now()
        await requestHandover(this.meta, disk, this.host)
        this.log.info({ disk, holder: holder.host }, 'lease held elsewhere; asked for hand-over')
      }
      const waitMs = askedAtMs + this.handoverTimeoutMs - Date.now()
      // Our own session, or this host's previous incarnation (restarted after a crash): nobody
      // is there to hand over, so take it at once.
      const ours = holder.sessionId === zk.sessionId || holder.host === this.host
      if (waitMs <= 0 || ours) {
        this.log.warn({ disk, holder: holder.host, leaseEpoch: holder.leaseEpoch }, 'lease holder did not hand over in time; taking the lease by force')
        await zk.remove(paths.lease(disk), holderData.stat.version).catch((e) => {
          if ((e as UkaiError).code !== 'NOT_FOUND' && (e as UkaiError).code !== 'ZK_CONFLICT') throw e
        })
        forced = true
        continue
      }
      await this.waitGone(paths.lease(disk), waitMs)
    }
  }

  // Takes the lease only if nobody holds it: no hand-over is asked, nobody who holds it is
  // fenced (agent.ts takes a lease freed while a disk is open for write here). Null: held.
  // Free means released: the fence says its last holder let it go (a lease znode that vanished
  // with an expired session is not free: its holder may still write under it, and re-asserts it
  // on its new session). A pending hand-over request of someone who waits to acquire is theirs
  // to win: we decline, rather than race them for the lease and make them ask us again.
  async acquireIfFree (disk: string): Promise<HeldLease | null> {
    const held = this.held.get(disk)
    if (held !== undefined) return held
    const fence = await this.zk.getOrNull(paths.fence(disk))
    if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
    const f = decodeJson<FenceRecord>(fence.data, `fence of ${disk}`)
    if (f.releasedEpoch !== f.leaseEpoch) return null
    const req = await this.zk.getOrNull(paths.handover(disk))
    if (req !== null) {
      const r = decodeJson<HandoverRequest>(req.data, `handover request of ${disk}`)
      if (r.host !== this.host && !r.host.endsWith(releaseOnlyRequester(''))) return null
    }
    // Bound to the fence we looked at: an epoch taken since (an orphaned relocation's) is not ours to fence.
    return await this.takeIfFree(disk, false, fence.stat.version)
  }

  // One multi: the fence epoch + 1 (conditional on its version) and our ephemeral lease znode.
  // Null when the lease znode exists; a fence that moved meanwhile is read again.
  // With `atFenceVersion`, only while the fence is still at that version (else null).
  private async takeIfFree (disk: string, forced: boolean, atFenceVersion?: number): Promise<HeldLease | null> {
    const zk = this.zk
    for (;;) {
      const fence = await zk.getOrNull(paths.fence(disk))
      if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
      if (atFenceVersion !== undefined && fence.stat.version !== atFenceVersion) return null
      const leaseEpoch = decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch + 1
      const record: LeaseRecord = { v: 1, host: this.host, leaseEpoch, sessionId: zk.sessionId, acquiredAtMs: Date.now() }
      try {
        await zk.multi([
          { op: 'set', path: paths.fence(disk), data: encodeJson({ v: 1, leaseEpoch } satisfies FenceRecord), version: fence.stat.version },
          { op: 'create', path: paths.lease(disk), data: encodeJson(record), ephemeral: true }
        ])
      } catch (err) {
        const code = (err as UkaiError).code
        if (code === 'ZK_CONFLICT') continue // the fence moved: someone else acquired; look again
        if (code === 'ALREADY_EXISTS') return null
        throw err
      }
      const lease: HeldLease = { disk, leaseEpoch, forced }
      this.held.set(disk, lease)
      this.assertedIn.set(disk, zk.sessionGeneration)
      this.watchHeld(disk, leaseEpoch)
      this.log.info({ disk, leaseEpoch, forced }, 'lease acquired')
      return lease
    }
  }

  // Waits until the znode is gone, or the time is up.
  private async waitGone (path: string, timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      this.zk.exists(path, () => { clearTimeout(timer); resolve() }).then((stat) => {
        if (stat === null) { clearTimeout(timer); resolve() }
      }, () => { clearTimeout(timer); resolve() })
    })
  }

  private watchHeld (disk: string, leaseEpoch: number): void {
    const zk = this.zk
    const generation = zk.sessionGeneration
    // A watch of an earlier session (or one that fires after the session was replaced) is not
    // news about the lease: the re-assertion on the new session decides.
    const still = (): boolean => this.held.get(disk)?.leaseEpoch === leaseEpoch && zk.sessionGeneration === generation && this.assertedIn.get(disk) === generation
    const watchLease = (): void => {
      if (!still()) return
      zk.exists(paths.lease(disk), watchLease).then((stat) => {
        // Gone within our live session: released or removed on purpose (a forced take-over).
        if (stat === null && still()) this.lost(disk)
      }, safetyCatch) // connection trouble: a reconnect re-arms the watch, an expiry re-asserts
    }
    const watchHandover = (): void => {
      if (!still()) return
      zk.getOrNull(paths.handover(disk), this.handoverWatcher(disk, watchHandover)).then((req) => {
        if (req !== null && still()) {
          const r = decodeJson<HandoverRequest>(req.data, `handover request of ${disk}`)
          if (r.host !== this.host) this.callbacks.onHandoverRequested(disk, r.host)
        }
      }, safetyCatch)
    }
    watchLease()
    watchHandover()
  }

  // One watcher function per disk for its hand-over request, whichever lease of it is held: the
  // request znode is usually absent and rarely changes, and the client keeps every distinct
  // function it is given until it does, so a closure per acquisition piled up on a disk opened
  // and closed again and again (MaxListenersExceededWarning in the agent's log). The same
  // function is kept once; it calls the current holding's check.
  private handoverWatcher (disk: string, current: () => void): () => void {
    this.handoverChecks.set(disk, current)
    let w = this.handoverWatchers.get(disk)
    if (w === undefined) {
      w = () => { this.handoverChecks.get(disk)?.() }
      this.handoverWatchers.set(disk, w)
    }
    return w
  }

  private lost (disk: string): void {
    this.assertedIn.delete(disk)
    if (!this.held.delete(disk)) return
    this.log.warn({ disk }, 'lease lost')
    this.callbacks.onLost(disk)
  }

  // Gives the lease up; the caller flushed first. While ZooKeeper is away the znode's removal
  // is retried when it is back instead of waited for (a close must not hang on ZooKeeper); until
  // then a requester sees our (idle) lease and takes it by force after its hand-over timeout.
  async release (disk: string): Promise<void> {
    const lease = this.held.get(disk)
    if (lease === undefined) return
    this.held.delete(disk)
    this.assertedIn.delete(disk)
    if (!this.zk.isConnected) { this.givenUpWhileAway(disk, lease.leaseEpoch); this.removeWhenBack(disk, lease.leaseEpoch); return }
    // A ZooKeeper that just went away is not noticed at once (seen: the release came 7 ms before
    // the client's disconnect): the removal then waits out the call bound (15 s). Wait for it
    // only briefly; it goes on in the background and is retried once ZooKeeper is back.
    const removal = this.removeLeaseZnode(disk, lease.leaseEpoch).then(() => true, (err) => {
      if (!isUkaiError(err, 'ZK_UNAVAILABLE')) throw err
      return false
    })
    const waited = new AbortController()
    const settled = await Promise.race([removal, sleep(RELEASE_WAIT_MS, { signal: waited.signal }).then(() => null, () => null)])
    waited.abort()
    if (settled === true) { this.log.info({ disk, leaseEpoch: lease.leaseEpoch }, 'lease released'); return }
    this.givenUpWhileAway(disk, lease.leaseEpoch)
    removal.then((removed) => {
      if (removed) this.log.info({ disk, leaseEpoch: lease.leaseEpoch }, 'lease released')
      else this.removeWhenBack(disk, lease.leaseEpoch)
    }, err => this.log.warn({ disk, err: String(err) }, 'removing a released lease failed'))
  }

  // With the removal, in one multi, the fence says the epoch was released (acquireIfFree: a
  // deliberate release, not an expired session). A fence that moved: a plain removal, as before.
  private async removeLeaseZnode (disk: string, leaseEpoch: number): Promise<void> {
    try {
      const cur = await this.zk.getOrNull(paths.lease(disk))
      if (cur !== null && decodeJson<LeaseRecord>(cur.data, `lease of ${disk}`).leaseEpoch === leaseEpoch) {
        const fence = await this.zk.getOrNull(paths.fence(disk))
        if (fence !== null && decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch === leaseEpoch) {
          try {
            await this.zk.multi([
              { op: 'remove', path: paths.lease(disk), version: cur.stat.version },
              { op: 'set', path: paths.fence(disk), data: encodeJson({ v: 1, leaseEpoch, releasedEpoch: leaseEpoch } satisfies FenceRecord), version: fence.stat.version }
            ])
            return
          } catch (err) {
            if ((err as UkaiError).code !== 'ZK_CONFLICT' && (err as UkaiError).code !== 'NOT_FOUND') throw err
          }
        }
        await this.zk.remove(paths.lease(disk), cur.stat.version)
      }
    } catch (err) {
      if ((err as UkaiError).code !== 'NOT_FOUND' && (err as UkaiError).code !== 'ZK_CONFLICT') throw err
    }
  }

  private givenUpWhileAway (disk: string, leaseEpoch: number): void {
    this.log.warn({ disk, leaseEpoch }, 'lease given up while ZooKeeper is away; its znode is removed when ZooKeeper is back')
  }

  private removeWhenBack (disk: string, leaseEpoch: number): void {
    const attempt = (): void => {
      if (this.held.has(disk)) return // taken again meanwhile (a new epoch): nothing to remove
      this.removeLeaseZnode(disk, leaseEpoch).then(() => {
        this.log.info({ disk, leaseEpoch }, 'lease released')
      }, (err) => {
        safetyCatch(err)
        this.zk.once('connected', attempt)
      })
    }
    this.zk.once('connected', attempt)
  }

  // Marks the lease as gone locally, e.g. after a storage node answered FENCED.
  dropLocal (disk: string): void { this.lost(disk) }

  heldDisks (): string[] { return [...this.held.keys()] }
}
