// What a disk really uses, for st_blocks on the mount (so `du` and `qemu-img info` show it
// instead of the full size): admin/used-bytes.ts (written blocks × block size, one in-sync
// replica asked with ListBlocks), cached per disk. getattr never waits for
// it: it answers from the cache (the full size until the first answer) and a figure older than
// USAGE_TTL_MS is refreshed in the background, one refresh per disk at a time; a close of a
// written handle refreshes it too.
//
// Holes (SEEK_DATA / SEEK_HOLE) come from the same written blocks, asked afresh at each lseek:
// vdisk/allocation.ts (Agent.allocation, the FUSE adapter's lseek).
import { safetyCatch } from '../errors'
import { Logger } from '../log'
import { DiskRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { usedBytes } from '../admin/used-bytes'
import { NodePool } from '../vdisk/node-pool'

const USAGE_TTL_MS = 5000

interface Usage { uuid: string, bytes: number, atMs: number }

export class DiskUsage {
  private readonly usage = new Map<string, Usage>()
  private readonly refreshing = new Map<string, Promise<void>>()

  constructor (private readonly deps: { meta: MetaStore, pool: NodePool, logger: Logger }) {}

  // Bytes the disk uses, or null while nothing is known yet (the caller shows the full size).
  allocatedBytes (rec: DiskRecord): number | null {
    const u = this.usage.get(rec.name)
    const known = u !== undefined && u.uuid === rec.uuid ? u : undefined
    if (known === undefined || Date.now() - known.atMs > USAGE_TTL_MS) this.refresh(rec)
    return known === undefined ? null : Math.min(known.bytes, rec.sizeBytes)
  }

  refresh (rec: DiskRecord): Promise<void> {
    let p = this.refreshing.get(rec.name)
    if (p === undefined) {
      p = this.ask(rec).catch((err) => {
        safetyCatch(err)
        this.deps.logger.debug({ disk: rec.name, err: String(err) }, 'disk usage not refreshed')
      }).finally(() => { this.refreshing.delete(rec.name) })
      this.refreshing.set(rec.name, p)
    }
    return p
  }

  forget (name: string): void { this.usage.delete(name) }

  private async ask (rec: DiskRecord): Promise<void> {
    const bytes = await usedBytes(this.deps.meta, rec, (node) =>
      this.deps.pool.get(node)?.alive == null ? null : this.deps.pool.client(node).listBlocks({ diskUuid: rec.uuid }))
    if (bytes !== null) this.usage.set(rec.name, { uuid: rec.uuid, bytes, atMs: Date.now() })
  }
}
