// The checksums of hot block versions in memory (version-files.ts), so a node's read does not
// pread the sidecar beside the version it reads. Write-through: the node is the only writer of
// its sidecars, and VersionFiles copies every entry it writes in here (update) or forgets the
// version (anything else that changes a sidecar), so an entry is what the file holds. A
// mismatch is still re-checked against the file itself before it is reported.
import { entriesOf } from './page-checksums'

// The sums of hot versions, least recently used dropped first, at most `maxBytes` of them in
// all: 8 MiB keeps the sums of 2048 versions of 4 MiB (8 GiB of hot data). An entry is the
// sidecar's entries (no header); pages past its end read as 0 (zero pages), as in the file.
export const SUMS_CACHE_MAX_BYTES = 8 * 1024 * 1024
export const SUMS_CACHED_FILE_MAX_BYTES = 16 * 1024   // bigger sidecars (blocks > 16 MiB) are read per read

export class SumsCache {
  private readonly entries = new Map<string, Buffer>()  // Map order is recency order
  private bytes = 0
  constructor (private readonly maxBytes: number) {}

  get (file: string, firstPage: number, count: number): Buffer | null {
    const e = this.entries.get(file)
    if (e === undefined) return null
    this.entries.delete(file)
    this.entries.set(file, e)
    return Buffer.from(entriesOf(e, firstPage, count))  // a copy: update() may change e meanwhile
  }

  set (file: string, sums: Buffer): void {
    this.forget(file)
    this.entries.set(file, sums)
    this.bytes += sums.length
    for (const [f, e] of this.entries) {
      if (this.bytes <= this.maxBytes) break
      this.entries.delete(f)
      this.bytes -= e.length
    }
  }

  // Entries written to the sidecar from `firstPage` on: copied in (grown as the file grows).
  update (file: string, firstPage: number, sums: Buffer): void {
    const e = this.entries.get(file)
    if (e === undefined) return
    const end = firstPage * 4 + sums.length
    if (end > SUMS_CACHED_FILE_MAX_BYTES) { this.forget(file); return }
    let next = e
    if (end > e.length) { next = Buffer.alloc(end); e.copy(next) }
    sums.copy(next, firstPage * 4)
    if (next !== e) this.set(file, next)
  }

  forget (file: string): void {
    const e = this.entries.get(file)
    if (e === undefined) return
    this.entries.delete(file)
    this.bytes -= e.length
  }

  forgetUnder (dir: string): void {
    for (const f of [...this.entries.keys()]) if (f.startsWith(dir + '/')) this.forget(f)
  }
}
