// What a flush makes durable: every version file of a disk written since its last flush, then
// the disk's directory when entries were created or removed. A flush that fails keeps them dirty,
// so the next one tries again instead of reporting success with nothing to do; a flush also
// waits for (and fails with) files an earlier, still running flush took off the dirty set.
import type { DiskState } from './disks'
import type { TranslateError } from './store-errors'
import type { VersionFiles } from './version-files'
import { versionPath } from './versions'

export class DiskSync {
  constructor (
    private readonly files: Pick<VersionFiles, 'fsyncFiles' | 'syncDir'>,
    private readonly translate: TranslateError
  ) {}

  // Files an earlier flush took off the dirty set may still be in its fsync: a flush waits for
  // those too, and fails with them, or it would call durable what is not yet.
  async flush (disk: DiskState): Promise<void> {
    const earlier = [...disk.syncing]
    const own = this.syncDirty(disk)
    disk.syncing.add(own)
    try { await own } finally { disk.syncing.delete(own) }
    await Promise.all(earlier)
  }

  // Makes every version of `block` durable, and the disk directory's entries (node-to-node
  // copies answer only after this: the executor marks a replica in sync, and later drops the
  // others, on the strength of the answer). One fsync per version file plus one of the directory:
  // a pull creates the version files, and a file not yet in the directory is lost with it.
  async syncBlock (disk: DiskState, block: number): Promise<void> {
    try {
      await this.files.fsyncFiles((disk.versions.get(block) ?? []).map(epoch => versionPath(disk, block, epoch)))
      if (disk.dirExists) await this.files.syncDir(disk.dir)
    } catch (err) {
      throw this.translate(err, `sync ${disk.uuid} block ${block}`)
    }
  }

  private async syncDirty (disk: DiskState): Promise<void> {
    const files = [...disk.dirty]
    disk.dirty.clear()
    const dirDirty = disk.dirDirty
    disk.dirDirty = false
    try {
      await this.files.fsyncFiles(files)
      if (dirDirty) await this.files.syncDir(disk.dir)
    } catch (err) {
      // Not durable: keep them dirty so the next flush retries.
      for (const f of files) disk.dirty.add(f)
      if (dirDirty) disk.dirDirty = true
      throw this.translate(err, `flush disk ${disk.uuid}`)
    }
  }
}
