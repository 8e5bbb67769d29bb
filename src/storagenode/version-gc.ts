// Garbage collection of block versions: a deleted disk's directory, blocks a relocation dropped
// from this node, and versions no live snapshot or head needs any more (snapshot delete,
// rollback). The bytes freed are real allocation (reconciled first), not write estimates.
import * as fsp from 'node:fs/promises'
import type { DiskTable } from './disks'
import type { Fencing } from './fencing'
import type { SpaceAccount } from './space'
import type { TranslateError } from './store-errors'
import type { VersionFiles } from './version-files'
import type { CopyOnWrite } from './versions'
import { newestAtMost } from './versions'

export interface VersionGcDeps {
  disks: Pick<DiskTable, 'get' | 'delete' | 'disksDir'>
  versions: Pick<CopyOnWrite, 'remove'>
  fencing: Pick<Fencing, 'admit'>
  space: Pick<SpaceAccount, 'reconcile' | 'forgetUnder'>
  files: Pick<VersionFiles, 'forgetUnder' | 'syncDir'>
  translate: TranslateError
}

export class VersionGc {
  constructor (private readonly deps: VersionGcDeps) {}

  // Removes all versions of all blocks and the fence state. Callers stop writing first: a write
  // racing the delete may leave a file behind.
  async deleteDisk (uuid: string): Promise<number> {
    const { disks, space, files } = this.deps
    const disk = disks.get(uuid)
    if (disk === undefined) return 0
    await Promise.allSettled([...disk.inflight, ...disk.creating.values()])
    await space.reconcile()  // so the freed count is real allocation, not estimates
    disks.delete(uuid)
    files.forgetUnder(disk.dir)
    const freed = space.forgetUnder(disk.dir)
    try {
      await fsp.rm(disk.dir, { recursive: true, force: true })
      await files.syncDir(disks.disksDir)
    } catch (err) {
      throw this.deps.translate(err, `delete disk ${uuid}`)
    }
    return freed
  }

  async deleteBlocks (uuid: string, blocks: number[]): Promise<number> {
    const disk = this.deps.disks.get(uuid)
    if (disk === undefined) return 0
    await this.deps.space.reconcile()
    let freed = 0
    for (const block of blocks) {
      for (const epoch of [...(disk.versions.get(block) ?? [])]) freed += await this.deps.versions.remove(disk, block, epoch)
    }
    if (freed > 0 || blocks.length > 0) await this.deps.files.syncDir(disk.dir).catch(() => {})
    return freed
  }

  // Drops every version no kept epoch needs: version v of a block stays iff v is the newest
  // version <= k for some k in `keepEpochs`, or (unless `dropNewer`) v > max(keepEpochs) — a
  // write at a head newer than the caller knew. Versions being created are never touched.
  // `leaseEpoch` > 0 (a rollback, run under the disk's lease) is fenced like a write: a holder
  // that took the lease by force meanwhile stops it; 0 (garbage collection) is not.
  async pruneVersions (uuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number): Promise<{ freedBytes: number, versionsRemoved: number }> {
    const disk = this.deps.disks.get(uuid)
    if (disk === undefined) return { freedBytes: 0, versionsRemoved: 0 }
    if (leaseEpoch > 0) await this.deps.fencing.admit(disk, leaseEpoch)
    await this.deps.space.reconcile()  // so the freed count is real allocation, not estimates
    const maxKeep = Math.max(...keepEpochs)
    let freedBytes = 0
    let versionsRemoved = 0
    for (const [block, epochs] of [...disk.versions]) {
      const needed = new Set<number>()
      for (const k of keepEpochs) { const v = newestAtMost(epochs, k); if (v !== undefined) needed.add(v) }
      for (const v of [...epochs]) {
        if (needed.has(v) || (v > maxKeep && !dropNewer) || disk.creating.has(`${block}.${v}`)) continue
        freedBytes += await this.deps.versions.remove(disk, block, v)
        versionsRemoved++
      }
    }
    if (versionsRemoved > 0) await this.deps.files.syncDir(disk.dir).catch(() => {})
    return { freedBytes, versionsRemoved }
  }
}
