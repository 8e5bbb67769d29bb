// A version of a block that must appear whole or not at all: a clone's block copied from a
// base on another node (base-copy.ts), whose copy takes long enough (a far link, a 64 MiB
// block) for a crash to cut it. Written through a temporary file; commit() fsyncs it, renames
// it into place unless the block got a version meanwhile (a write of the clone raced the copy:
// never overwritten), and fsyncs the directory — as a local clone (versions.ts) does. A
// crash before the rename leaves only the temporary, removed at the next start (scan), so the
// base still shows through; the version is never a mix of the base and missing bytes.
import * as fsp from 'node:fs/promises'
import { UkaiError, safetyCatch } from '../errors'
import type { DiskState } from './disks'
import type { Fencing } from './fencing'
import type { SpaceAccount } from './space'
import { pagesSpanBytes } from './space'
import { checkRange } from './store-checks'
import type { TranslateError } from './store-errors'
import type { VersionFiles } from './version-files'
import { writeAll } from './write-all'
import { hasOrCreatesVersion, insertSorted, versionPath } from './versions'
import { MAX_IO_BYTES } from './wire'

// A version built off to the side (a clone's block pulled from a base on another node): its
// bytes go to a temporary file, and only commit() gives it its name (see above).
export interface StagedVersion {
  write (offset: number, data: Buffer): Promise<void>
  // 'present' (and nothing installed) when the block got a version meanwhile.
  commit (): Promise<'present' | 'copied'>
  // Drops the temporary file; idempotent, and a no-op after commit().
  abort (): Promise<void>
}

export interface VersionStagingDeps {
  fencing: Pick<Fencing, 'admit' | 'track'>
  ensureDir: (disk: DiskState) => Promise<void>
  files: Pick<VersionFiles, 'fsync' | 'syncDir' | 'writeSidecarFor' | 'renameSidecar' | 'removeSidecar'>
  space: Pick<SpaceAccount, 'reserve' | 'release' | 'setAlloc'>
  translate: TranslateError
}

export class VersionStaging {
  private stagedCount = 0  // makes each staged version's temporary file name unique

  constructor (private readonly deps: VersionStagingDeps) {}

  async stage (disk: DiskState, block: number, epoch: number, leaseEpoch: number): Promise<StagedVersion> {
    const { fencing, files, space, translate } = this.deps
    await fencing.admit(disk, leaseEpoch)  // a fenced writer is refused before any byte moves
    const file = versionPath(disk, block, epoch)
    const tmp = `${file}.staged-${++this.stagedCount}.tmp`  // .tmp: removed at start (scan)
    const what = `copy into ${disk.uuid} block ${block}.${epoch}`
    let fh: fsp.FileHandle
    try {
      await this.deps.ensureDir(disk)
      fh = await fsp.open(tmp, 'wx', 0o600)
    } catch (err) {
      throw translate(err, what)
    }
    let reservedBytes = 0
    let finished = false
    const finish = async (): Promise<void> => {
      if (finished) return
      finished = true
      space.release(reservedBytes)
      await fh.close()
    }
    const abort = async (): Promise<void> => {
      if (finished) return
      try { await finish() } finally { await fsp.rm(tmp, { force: true }); await files.removeSidecar(tmp) }
    }
    const write = async (offset: number, data: Buffer): Promise<void> => {
      checkRange(offset, data.length, MAX_IO_BYTES)
      if (finished) throw UkaiError.internal(`${what}: write after commit or abort`)
      const worstCaseBytes = pagesSpanBytes(offset, data.length)
      await space.reserve(worstCaseBytes)
      reservedBytes += worstCaseBytes
      try { await writeAll(fh, data, offset) } catch (err) { throw translate(err, what) }
    }
    const commit = async (): Promise<'present' | 'copied'> => {
      if (finished) throw UkaiError.internal(`${what}: commit after commit or abort`)
      try {
        await files.fsync(fh)  // durable before it gets its name
        await files.writeSidecarFor(tmp, what)  // and its checksums, from the bytes it holds
      } catch (err) {
        await abort()
        throw translate(err, what)
      }
      // Checked and claimed in one turn of the loop: a write creating the version waits for it.
      const key = `${block}.${epoch}`
      if (hasOrCreatesVersion(disk, block)) { await abort(); return 'present' }
      let durable: Promise<void>
      try {
        durable = fencing.admit(disk, leaseEpoch)  // fenced meanwhile: the newer holder wins
      } catch (err) {
        await abort()
        throw err
      }
      const op = (async () => {
        try {
          await files.renameSidecar(tmp, file)
          await fsp.rename(tmp, file)
          space.setAlloc(file, (await fh.stat()).blocks * 512)
          insertSorted(disk.versions, block, epoch)
          disk.dirDirty = true  // if the sync below fails, the next flush tries again
          await files.syncDir(disk.dir)
        } catch (err) {
          throw translate(err, what)
        } finally {
          await finish().catch(safetyCatch)
          await fsp.rm(tmp, { force: true }).catch(safetyCatch)  // only when the rename failed
        }
      })().finally(() => disk.creating.delete(key))
      disk.creating.set(key, op)
      await fencing.track(disk, op)
      await durable
      return 'copied'
    }
    return { write, commit, abort }
  }
}
