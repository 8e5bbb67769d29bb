// The leases of the disks open on this host: what ZooKeeper's lease events do to their engines
// (a hand-over request makes the engine drain and hand over, or lets go of a lease no engine
// holds; a lost lease stops its writes; a lease re-asserted on a new session re-arms it), and
// when an open for write takes the lease instead of waiting for the guest's first write (a
// migration's destination: the holder's release is followed, free-lease.ts).
//
// Split from agent.ts so every lease decision of the mount has one owner; the engine's own use of
// its lease (acquire at the first write, fencing) stays in vdisk/virtual-disk.ts.
import { safetyCatch } from '../errors'
import { Logger } from '../log'
import { LeaseManager } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { VirtualDisk } from '../vdisk/virtual-disk'
import { AgentHooks } from './agent-hooks'
import { FreeLeaseFollower } from './free-lease'

export interface DiskLeasesDeps {
  meta: MetaStore
  host: string
  log: Logger
  hooks: Pick<AgentHooks, 'handoverRequested' | 'leaseLost' | 'leaseAcquired'>
  // The engine of a disk open here and how many of its handles may write; undefined: not open.
  opened: (name: string) => { disk: VirtualDisk, writable: number } | undefined
  closed: () => boolean
  handoverTimeoutMs?: number
}

export class DiskLeases {
  readonly manager: LeaseManager
  private readonly freeLease: FreeLeaseFollower

  constructor (private readonly deps: DiskLeasesDeps) {
    const { hooks, log } = deps
    this.freeLease = new FreeLeaseFollower({
      meta: deps.meta,
      log,
      waiting: (name) => {
        const o = deps.opened(name)
        return o !== undefined && o.writable > 0 && this.manager.holding(name) === undefined && !deps.closed() ? o.disk : null
      }
    })
    this.manager = new LeaseManager(deps.meta, deps.host, {
      onHandoverRequested: (disk, requester) => {
        const o = deps.opened(disk)
        log.info({ disk, requester }, 'hand-over requested')
        hooks.handoverRequested?.(disk)
        hooks.leaseLost?.(disk)
        if (o !== undefined) o.disk.handOver().catch(err => log.error({ disk, err: String(err) }, 'hand-over failed'))
        else this.manager.release(disk).catch(safetyCatch)
      },
      onLost: (disk) => { hooks.leaseLost?.(disk); deps.opened(disk)?.disk.leaseLost() },
      onReasserted: (disk) => {
        const o = deps.opened(disk)
        if (o === undefined) return
        o.disk.leaseReasserted()
        hooks.leaseAcquired?.(o.disk)
      }
    }, { handoverTimeoutMs: deps.handoverTimeoutMs, logger: log })
  }

  // Opening for write takes a free lease now; a held one when its holder lets it go (a
  // migration's destination: free-lease.ts), or at our first write, whichever comes first.
  // takeFreeNow false (an NBD export, which may or may not be written): a free lease waits for
  // the first write, as before; a lease freed later is still taken.
  // Only an optimisation: while ZooKeeper is away the open does not wait for it (the write will).
  async openedForWrite (name: string, disk: VirtualDisk, takeFreeNow: boolean): Promise<void> {
    if (this.manager.holding(name) !== undefined || !this.deps.meta.isConnected) return
    try {
      // The watch first, so a release between the look and the watch is not missed.
      await this.freeLease.follow(name, { now: false })
      if (takeFreeNow && !await this.deps.meta.leaseHeldAnywhere(name)) await disk.ensureLease()
    } catch (err) {
      safetyCatch(err)
      this.deps.log.warn({ disk: name, err: String(err) }, 'could not take the lease at open')
    }
  }
}
