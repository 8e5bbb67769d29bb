// Block versions and copy-on-write: which version file a read or a write at an epoch goes to.
//
// A block has versions keyed by epoch (DATA/disks/<uuid>/<block>.<epoch>). A read at epoch e
// reads the newest version <= e. A write at epoch e to a block whose newest version is older
// first clones that version (thin-clone.ts), so a committed version is never modified again;
// creating a version (empty or cloned) happens once per key, other writers wait for it. A
// discard only ever changes the version at its own epoch.
//
// Clones are made durable under a temporary name before they get their own, so a crash never
// leaves a half-copied version behind: a version that exists after a crash holds the older
// version's bytes, and a leftover .tmp is removed at the next start (startup-scan.ts).
import * as fsp from 'node:fs/promises'
import { UkaiError } from '../errors'
import { BLOCK_SIZE_MAX_BYTES } from '../lib/limits'
import type { DiskState } from './disks'
import type { SpaceAccount } from './space'
import { pagesSpanBytes } from './space'
import type { TranslateError } from './store-errors'
import { cloneSparse } from './thin-clone'
import type { VersionFiles } from './version-files'
import { allocatedBytesOf } from './write-all'

export interface BlockVersionInfo { epoch: number, allocatedBytes: number, sizeBytes: number }

export interface CopyOnWriteDeps {
  files: Pick<VersionFiles, 'write' | 'create' | 'zeroRange' | 'forget' | 'fsync' | 'syncDir' | 'copySidecar' | 'renameSidecar' | 'removeSidecar'>
  space: Pick<SpaceAccount, 'reserve' | 'release' | 'addUnsettled' | 'setAlloc' | 'forgetAlloc' | 'allocatedOf' | 'costOfCopy'>
  ensureDir: (disk: DiskState) => Promise<void>
  translate: TranslateError
}

export class CopyOnWrite {
  constructor (private readonly deps: CopyOnWriteDeps) {}

  // Called under the range lock of (block, epoch) from offset to offset+data.length.
  async write (disk: DiskState, block: number, epoch: number, offset: number, data: Buffer): Promise<void> {
    if (data.length === 0) return
    const { files, space } = this.deps
    await this.ensure(disk, block, epoch)
    const file = versionPath(disk, block, epoch)
    const worstCaseBytes = pagesSpanBytes(offset, data.length)
    // Invariants right before touching the disk.
    if (offset + data.length > BLOCK_SIZE_MAX_BYTES) throw UkaiError.internal(`write past max block size: ${offset}+${data.length}`)
    if (!(disk.versions.get(block)?.includes(epoch) ?? false)) throw UkaiError.internal(`version ${block}.${epoch} of ${disk.uuid} vanished`)
    await space.reserve(worstCaseBytes)
    try {
      await files.write(file, offset, data)
      space.addUnsettled(file, worstCaseBytes)
      disk.dirty.add(file)
    } catch (err) {
      space.addUnsettled(file, worstCaseBytes)  // a partial write may have allocated
      throw this.deps.translate(err, `write ${disk.uuid} block ${block}.${epoch}`)
    } finally {
      space.release(worstCaseBytes)
    }
  }

  // Makes [offset, offset+length) of version `epoch` read as zeros and frees its space: the
  // whole version is deleted when nothing older would show through, or replaced by an empty
  // version when an older (committed) one would — that one is never touched; a range reaching
  // the end of the file truncates it; a range inside is a punched hole (zeros written where the
  // filesystem cannot punch). Called under the range lock of (block, epoch) from offset to the
  // end of the block: truncation affects everything after offset.
  async discard (disk: DiskState, block: number, epoch: number, offset: number, length: number): Promise<void> {
    if (length === 0) return
    const epochs = disk.versions.get(block)
    const visible = newestAtMost(epochs, epoch)
    if (visible === undefined) return  // nothing there: already zeros
    const older = newestAtMost(epochs, epoch - 1)
    try {
      const visibleSizeBytes = (await fsp.stat(versionPath(disk, block, visible))).size
      if (offset >= visibleSizeBytes) return  // past the end of the file: already zeros
      if (offset === 0 && length >= visibleSizeBytes) {
        // The whole version goes. Deleting it would expose an older one, so that case leaves an
        // empty version at this epoch instead (no clone: none of the old bytes are needed).
        if (visible === epoch) await this.remove(disk, block, epoch)
        if (older !== undefined) await this.ensure(disk, block, epoch, true)
        return
      }
      await this.ensure(disk, block, epoch)
      const file = versionPath(disk, block, epoch)
      this.deps.space.setAlloc(file, await this.deps.files.zeroRange(file, offset, length))
      disk.dirty.add(file)
    } catch (err) {
      throw this.deps.translate(err, `discard ${disk.uuid} block ${block}.${epoch}`)
    }
  }

  // Version `epoch` of `block` exists after this: created empty, or cloned from the newest older
  // version (copy-on-write; the older, committed version is never modified).
  // `empty`: create it empty even where an older version exists (a discard of the whole block).
  async ensure (disk: DiskState, block: number, epoch: number, empty = false): Promise<void> {
    if (disk.versions.get(block)?.includes(epoch) ?? false) return
    const key = `${block}.${epoch}`
    let pending = disk.creating.get(key)
    if (pending === undefined) {
      pending = this.create(disk, block, epoch, empty).finally(() => disk.creating.delete(key))
      disk.creating.set(key, pending)
    }
    await pending
  }

  private async create (disk: DiskState, block: number, epoch: number, empty: boolean): Promise<void> {
    await this.deps.ensureDir(disk)
    const file = versionPath(disk, block, epoch)
    const older = newestAtMost(disk.versions.get(block), epoch - 1)
    if (older === undefined || empty) {
      await this.deps.files.create(file)
      this.deps.space.setAlloc(file, 0)
    } else {
      await this.copyFile(versionPath(disk, block, older), file, `clone ${disk.uuid} block ${block}.${older} to epoch ${epoch}`)
      disk.dirty.add(file)
    }
    disk.dirDirty = true
    insertSorted(disk.versions, block, epoch)
  }

  // Copy-on-write of a clone's block from a base disk on this node: version `epoch` of `block`
  // becomes a copy of version `baseEpoch` of the base's block, durable with its directory entry.
  async copyFromBase (disk: DiskState, base: DiskState, block: number, epoch: number, baseEpoch: number): Promise<void> {
    await this.deps.ensureDir(disk)
    const file = versionPath(disk, block, epoch)
    await this.copyFile(versionPath(base, block, baseEpoch), file, `copy ${base.uuid} block ${block}.${baseEpoch} to clone ${disk.uuid} epoch ${epoch}`)
    disk.dirty.add(file)
    disk.dirDirty = true
    insertSorted(disk.versions, block, epoch)
    // The copy's bytes were made durable before the rename; the entry now is too, so the
    // clone's block never reads as zeros after a crash where the base had data.
    try { await this.deps.files.syncDir(disk.dir) } catch (err) { throw this.deps.translate(err, `copy base into ${disk.uuid} block ${block}`) }
  }

  // Copies a version file (sparse: holes stay holes) with its space reserved first, under a
  // temporary name so a crash never leaves a half-copied version behind.
  private async copyFile (src: string, file: string, what: string): Promise<void> {
    const { files, space } = this.deps
    const costBytes = space.costOfCopy(src)
    await space.reserve(costBytes)
    try {
      const tmp = file + '.tmp'
      await cloneSparse(src, tmp)
      // Durable before it gets its name: a version that exists after a crash must hold the older
      // version's bytes (reads pick it over that one); a crash before the rename leaves a .tmp,
      // removed at start, and the older version still shows through.
      const fh = await fsp.open(tmp, 'r+')
      try { await files.fsync(fh) } finally { await fh.close() }
      // Its checksums first: a version never has a name without its sums (a crash in between
      // leaves a sidecar without a version, removed at start).
      await files.copySidecar(src, tmp)
      await files.renameSidecar(tmp, file)
      await fsp.rename(tmp, file)
      space.setAlloc(file, await allocatedBytesOf(file))
    } catch (err) {
      throw this.deps.translate(err, what)
    } finally {
      space.release(costBytes)
    }
  }

  // Deletes one version; answers the bytes it held.
  async remove (disk: DiskState, block: number, epoch: number): Promise<number> {
    const file = versionPath(disk, block, epoch)
    const epochs = disk.versions.get(block)
    if (epochs !== undefined) {
      const i = epochs.indexOf(epoch)
      if (i >= 0) epochs.splice(i, 1)
      if (epochs.length === 0) disk.versions.delete(block)
    }
    this.deps.files.forget(file)
    disk.dirty.delete(file)
    let freed = this.deps.space.allocatedOf(file)
    this.deps.space.forgetAlloc(file)
    try {
      await fsp.rm(file, { force: true })
      freed += await this.deps.files.removeSidecar(file)
    } catch (err) {
      throw this.deps.translate(err, `delete ${disk.uuid} block ${block}.${epoch}`)
    }
    disk.dirDirty = true
    return freed
  }

  // Size and allocation of every version of a block (what a node-to-node copy pulls).
  async info (disk: DiskState | undefined, block: number): Promise<BlockVersionInfo[]> {
    const epochs = disk?.versions.get(block) ?? []
    const out: BlockVersionInfo[] = []
    for (const epoch of epochs) {
      try {
        const st = await fsp.stat(versionPath(disk as DiskState, block, epoch))
        out.push({ epoch, allocatedBytes: st.blocks * 512, sizeBytes: st.size })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.deps.translate(err, `stat ${disk?.uuid ?? ''} block ${block}`)
      }
    }
    return out
  }
}

export function versionPath (disk: DiskState, block: number, epoch: number): string {
  return `${disk.dir}/${block}.${epoch}`
}

// The version a read at `epoch` sees: the newest one not newer than it.
export function newestAtMost (epochs: number[] | undefined, epoch: number): number | undefined {
  if (epochs === undefined) return undefined
  for (let i = epochs.length - 1; i >= 0; i--) if (epochs[i] <= epoch) return epochs[i]
  return undefined
}

export function insertSorted (versions: Map<number, number[]>, block: number, epoch: number): void {
  let epochs = versions.get(block)
  if (epochs === undefined) { epochs = []; versions.set(block, epochs) }
  if (epochs.includes(epoch)) return
  epochs.push(epoch)
  epochs.sort((a, b) => a - b)
}

// A block that has a version, or one being created: a copy from a clone's base must not land
// over it (a write of the clone raced the copy and is never overwritten).
export function hasOrCreatesVersion (disk: DiskState, block: number): boolean {
  return (disk.versions.get(block)?.length ?? 0) > 0 || (disk.creating.size > 0 && [...disk.creating.keys()].some(k => k.startsWith(`${block}.`)))
}
