// A disk opened for write here while another host holds its lease — a live migration's
// destination: QEMU opens the image while the source still runs it — takes the lease the moment
// the holder lets it go, in the background, instead of at the guest's first write. The bench
// measured what that first write waited for: four ZooKeeper round trips to ask, the hand-over,
// then fencing every node of the map across the WAN and re-reading the record: 0.19-0.31 s from
// the write to 'lease ready' (run 06:19), 1.7 s to 'lease acquired' at load 65
// (docs/performance.md "Live migration between sites").
//
// Only a free lease is taken (LeaseManager.acquireIfFree): no hand-over is asked, nobody who
// holds the lease is fenced, and a host waiting to acquire behind its own hand-over request is
// left to win. The holder lets go only when its last handle closes (the source QEMU ended) or
// when asked (finish-migration, a requester's write): so the source writes for as long as it
// runs, exactly as before (test/vdisk-free-lease.test.ts). A read never triggers anything.
import { safetyCatch } from '../errors'
import { Logger } from '../log'
import { MetaStore } from '../meta/store'
import { VirtualDisk } from '../vdisk/virtual-disk'

export interface FreeLeaseDeps {
  meta: Pick<MetaStore, 'watchLease'>
  log: Logger
  // The disk, while it is open for write here and this host does not hold its lease; else null.
  waiting: (name: string) => VirtualDisk | null
}

export class FreeLeaseFollower {
  private readonly armed = new Set<string>()

  constructor (private readonly deps: FreeLeaseDeps) {}

  // Takes the lease now if it is free (unless `now` is false); otherwise watches it and takes it
  // once freed, for as long as `waiting` names the disk. True when this host holds it on return.
  async follow (name: string, opts: { now?: boolean } = {}): Promise<boolean> {
    const disk = this.deps.waiting(name)
    if (disk === null) return false
    if (!this.armed.has(name)) {
      this.armed.add(name)
      // Armed before looking, so a release between the look and the watch is not missed.
      await this.deps.meta.watchLease(name, () => {
        this.armed.delete(name)
        const t0 = Date.now()
        this.follow(name).then((took) => {
          if (took) this.deps.log.info({ disk: name, tookMs: Date.now() - t0 }, 'lease freed elsewhere: taken for the disk open for write here')
        }, (err) => { safetyCatch(err); this.deps.log.warn({ disk: name, err: String(err) }, 'could not take the freed lease (the first write will)') })
      })
    }
    return opts.now === false ? false : await disk.takeLeaseIfFree()
  }
}
