// A bounded LRU of open FileHandles so the data path never opens/closes a file per I/O.
// Handles are reference counted: an entry in use is never closed under a reader or writer, so the
// cache may exceed its bound briefly when every handle is busy.
import * as fs from 'node:fs'
import { FileHandle, open } from 'node:fs/promises'
import { safetyCatch } from '../errors'

// Two handles per block version in use (its bytes and its checksum sidecar): 512 keeps 256
// versions open, 1 GiB of 4 MiB blocks, as 256 did before checksums.
export const MAX_OPEN_FILES_DEFAULT = 512

interface Entry {
  opening: Promise<FileHandle>
  fh?: FileHandle
  refs: number
  doomed: boolean   // close as soon as the last user releases it
}

export interface FileLease {
  fh: FileHandle
  release: () => void
}

export class FileCache {
  private readonly entries = new Map<string, Entry>()  // Map order is recency order
  constructor (private readonly maxOpenFiles = MAX_OPEN_FILES_DEFAULT) {}

  get size (): number { return this.entries.size }

  // create: open with O_CREAT (the caller decided the file should exist); otherwise the file must exist.
  async acquire (filePath: string, create = false): Promise<FileLease> {
    let entry = this.entries.get(filePath)
    if (entry !== undefined) {
      this.entries.delete(filePath)
      this.entries.set(filePath, entry)
    } else {
      const flags = create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR
      const e: Entry = { opening: open(filePath, flags, 0o600), refs: 0, doomed: false }
      e.opening.then(fh => { e.fh = fh }, () => { if (this.entries.get(filePath) === e) this.entries.delete(filePath) })
      this.entries.set(filePath, e)
      entry = e
      this.evict()
    }
    const e = entry
    e.refs++
    let fh: FileHandle
    try {
      fh = await e.opening
    } catch (err) {
      e.refs--
      throw err
    }
    return this.lease(e, fh)
  }

  // The lease of a handle that is already open, without waiting; null when it is not (then
  // acquire). The write path's common case: no promise, no event-loop turn between the caller's
  // checks and its pwrite (version-files.ts).
  acquireOpen (filePath: string): FileLease | null {
    const e = this.entries.get(filePath)
    if (e?.fh === undefined) return null
    this.entries.delete(filePath)
    this.entries.set(filePath, e)
    e.refs++
    return this.lease(e, e.fh)
  }

  private lease (e: Entry, fh: FileHandle): FileLease {
    let released = false
    return {
      fh,
      release: () => {
        if (released) return
        released = true
        e.refs--
        if (e.refs === 0 && e.doomed) closeQuietly(fh)
        else if (this.entries.size > this.maxOpenFiles) this.evict()
      }
    }
  }

  // Forget a path (deleted or renamed over); its handle closes once unused.
  forget (filePath: string): void {
    const e = this.entries.get(filePath)
    if (e === undefined) return
    this.entries.delete(filePath)
    this.doom(e)
  }

  forgetUnder (dirPath: string): void {
    for (const p of [...this.entries.keys()]) if (p.startsWith(dirPath + '/')) this.forget(p)
  }

  async closeAll (): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    await Promise.allSettled(all.map(async e => {
      const fh = await e.opening
      if (e.refs === 0) await fh.close()
      else e.doomed = true
    }))
  }

  private doom (e: Entry): void {
    e.doomed = true
    if (e.refs === 0) e.opening.then(closeQuietly, safetyCatch)
  }

  private evict (): void {
    if (this.entries.size <= this.maxOpenFiles) return
    for (const [p, e] of this.entries) {
      if (this.entries.size <= this.maxOpenFiles) break
      if (e.refs === 0 && e.fh !== undefined) {
        this.entries.delete(p)
        this.doom(e)
      }
    }
  }
}

function closeQuietly (fh: FileHandle): void {
  fh.close().catch(safetyCatch)
}
