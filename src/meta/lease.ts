// The write lease of a disk: one ephemeral znode naming the holder, plus a persistent fence
// record whose lease epoch grows by one with every acquisition. Both change in one transaction,
// so an epoch is never handed out twice. Storage nodes refuse writes carrying an older epoch.
//
// Hand-over is cooperative first: the requester leaves a handover request; the holder flushes and
// releases. If the holder does not release within the timeout (or its session is gone, which
// removes the ephemeral by itself), the requester deletes the lease and takes it by force.
import { UkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { FenceRecord, HandoverRequest, LeaseRecord, decodeJson, encodeJson, paths } from './schema'
import { MetaStore } from './store'

export const LEASE_HANDOVER_TIMEOUT_MS_DEFAULT = 5000

export interface LeaseInfo { holder: LeaseRecord | null, fenceEpoch: number }

export async function readLease (meta: MetaStore, disk: string): Promise<LeaseInfo> {
  const fence = await meta.zk.getOrNull(paths.fence(disk))
  if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
  const lease = await meta.zk.getOrNull(paths.lease(disk))
  return {
    holder: lease === null ? null : decodeJson<LeaseRecord>(lease.data, `lease of ${disk}`),
    fenceEpoch: decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch
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
}

export class LeaseManager {
  private readonly meta: MetaStore
  private readonly host: string
  private readonly handoverTimeoutMs: number
  private readonly log: Logger
  private readonly held = new Map<string, HeldLease>()
  private readonly callbacks: LeaseCallbacks

  constructor (meta: MetaStore, host: string, callbacks: LeaseCallbacks, opts: { handoverTimeoutMs?: number, logger?: Logger } = {}) {
    this.meta = meta
    this.host = host
    this.callbacks = callbacks
    this.handoverTimeoutMs = opts.handoverTimeoutMs ?? LEASE_HANDOVER_TIMEOUT_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
    // A new session means our ephemeral leases are gone: whoever writes next must re-acquire.
    meta.zk.on('expired', () => {
      for (const disk of [...this.held.keys()]) this.lost(disk)
    })
  }

  holding (disk: string): HeldLease | undefined { return this.held.get(disk) }

  // Takes the lease, asking the holder to hand over (or forcing it after the timeout).
  async acquire (disk: string, opts: { signal?: AbortSignal } = {}): Promise<HeldLease> {
    const existing = this.held.get(disk)
    if (existing !== undefined) return existing
    const zk = this.meta.zk
    let askedAtMs = 0
    let forced = false
    for (;;) {
      opts.signal?.throwIfAborted()
      const fence = await zk.getOrNull(paths.fence(disk))
      if (fence === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
      const leaseEpoch = decodeJson<FenceRecord>(fence.data, `fence of ${disk}`).leaseEpoch + 1
      const record: LeaseRecord = { v: 1, host: this.host, leaseEpoch, sessionId: zk.sessionId, acquiredAtMs: Date.now() }
      try {
        await zk.multi([
          { op: 'set', path: paths.fence(disk), data: encodeJson({ v: 1, leaseEpoch } satisfies FenceRecord), version: fence.stat.version },
          { op: 'create', path: paths.lease(disk), data: encodeJson(record), ephemeral: true }
        ])
        const lease: HeldLease = { disk, leaseEpoch, forced }
        this.held.set(disk, lease)
        this.watchHeld(disk, leaseEpoch)
        if (askedAtMs !== 0) await zk.remove(paths.handover(disk)).catch(safetyCatch)
        this.log.info({ disk, leaseEpoch, forced }, 'lease acquired')
        return lease
      } catch (err) {
        const code = (err as UkaiError).code
        if (code === 'ZK_CONFLICT') continue // the fence moved: someone else acquired; look again
        if (code !== 'ALREADY_EXISTS') throw err
      }
      // Held by someone else (or a leftover of our own expired session).
      const holderData = await zk.getOrNull(paths.lease(disk))
      if (holderData === null) continue
      const holder = decodeJson<LeaseRecord>(holderData.data, `lease of ${disk}`)
      if (askedAtMs === 0) {
        askedAtMs = Date.now()
        const req: HandoverRequest = { v: 1, host: this.host, requestedAtMs: askedAtMs }
        await zk.create(paths.handover(disk), encodeJson(req), { ephemeral: true }).catch((e) => {
          if ((e as UkaiError).code !== 'ALREADY_EXISTS') throw e
        })
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

  // Waits until the znode is gone, or the time is up.
  private async waitGone (path: string, timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      this.meta.zk.exists(path, () => { clearTimeout(timer); resolve() }).then((stat) => {
        if (stat === null) { clearTimeout(timer); resolve() }
      }, () => { clearTimeout(timer); resolve() })
    })
  }

  private watchHeld (disk: string, leaseEpoch: number): void {
    const zk = this.meta.zk
    const still = (): boolean => this.held.get(disk)?.leaseEpoch === leaseEpoch
    const watchLease = (): void => {
      if (!still()) return
      zk.exists(paths.lease(disk), watchLease).then((stat) => {
        if (stat === null && still()) this.lost(disk)
      }, () => { /* connection trouble: the session-expiry path handles loss */ })
    }
    const watchHandover = (): void => {
      if (!still()) return
      zk.getOrNull(paths.handover(disk), watchHandover).then((req) => {
        if (req !== null && still()) {
          const r = decodeJson<HandoverRequest>(req.data, `handover request of ${disk}`)
          if (r.host !== this.host) this.callbacks.onHandoverRequested(disk, r.host)
        }
      }, () => {})
    }
    watchLease()
    watchHandover()
  }

  private lost (disk: string): void {
    if (!this.held.delete(disk)) return
    this.log.warn({ disk }, 'lease lost')
    this.callbacks.onLost(disk)
  }

  // Gives the lease up; the caller flushed first.
  async release (disk: string): Promise<void> {
    const lease = this.held.get(disk)
    if (lease === undefined) return
    this.held.delete(disk)
    try {
      const cur = await this.meta.zk.getOrNull(paths.lease(disk))
      if (cur !== null && decodeJson<LeaseRecord>(cur.data, `lease of ${disk}`).leaseEpoch === lease.leaseEpoch) {
        await this.meta.zk.remove(paths.lease(disk), cur.stat.version)
      }
    } catch (err) {
      if ((err as UkaiError).code !== 'NOT_FOUND' && (err as UkaiError).code !== 'ZK_CONFLICT') throw err
    }
    this.log.info({ disk, leaseEpoch: lease.leaseEpoch }, 'lease released')
  }

  // Marks the lease as gone locally, e.g. after a storage node answered FENCED.
  dropLocal (disk: string): void { this.lost(disk) }

  heldDisks (): string[] { return [...this.held.keys()] }
}
