// Disks whose last handle closed stay cached here with their placement map and its watches, so
// opening one again reads nothing from ZooKeeper — also while ZooKeeper is away (issue 9,
// test/meta-zk-ephemerals.test.ts). A few KiB of map each (plus the watches); the least
// recently closed is dropped first.
//
// Split from agent.ts so the cache's bound and its order have one owner; the agent decides when a
// disk goes in (its last handle closed and it went idle) and when one must go (deleted, gone from
// the disk list).
import { safetyCatch } from '../errors'
import { Logger } from '../log'
import { VirtualDisk } from '../vdisk/virtual-disk'

const WARM_DISKS_MAX = 16

export class WarmDisks {
  // Insertion order is the order of closing: the first key is the least recently closed.
  private readonly disks = new Map<string, VirtualDisk>()

  constructor (private readonly deps: { log: Logger, closed: () => boolean }) {}

  names (): IterableIterator<string> { return this.disks.keys() }
  all (): IterableIterator<VirtualDisk> { return this.disks.values() }

  // Keeps a disk whose last handle closed (closes it at once once the agent is closing).
  keep (disk: VirtualDisk): void {
    if (this.deps.closed()) { disk.close().catch(safetyCatch); return }
    this.disks.delete(disk.name)
    this.disks.set(disk.name, disk)
    for (const name of this.disks.keys()) {
      if (this.disks.size <= WARM_DISKS_MAX) break
      this.drop(name)
    }
  }

  drop (name: string): void {
    const disk = this.disks.get(name)
    if (disk === undefined) return
    this.disks.delete(name)
    disk.close().catch(err => this.deps.log.warn({ disk: name, err: String(err) }, 'closing a cached disk failed'))
  }

  // The cached engine of `name`, if it is still the disk of that name (not deleted and created
  // again meanwhile: `uuid`, the current record's, tells).
  take (name: string, uuid: string | undefined): VirtualDisk | undefined {
    const disk = this.disks.get(name)
    if (disk === undefined) return undefined
    this.disks.delete(name)
    if (disk.record.uuid === uuid) return disk
    disk.close().catch(safetyCatch)
    return undefined
  }

  // The agent's drain closes them all; its abort destroys them itself (clear).
  dropAll (): void { for (const name of [...this.disks.keys()]) this.drop(name) }
  clear (): void { this.disks.clear() }
}
