// A bounded on-disk cache of committed block versions on the agent host (`ukai mount --cache-dir
// DIR --cache-size 1G`), for snapshot and clone-parent reads whose nearest replica is far.
//
// Why no invalidation is needed: a committed version (disk uuid, block, epoch) never changes —
// writes go to the head epoch, which is above every snapshot, and epochs are never reused (a
// rollback drops versions but the disk's epoch does not go back). So entries are keyed by the
// version actually stored — never by the requested snapshot epoch alone, since a read at
// snapshot s returns the newest version <= s, which several snapshots may share. Head blocks never
// come here: only EpochReader (committed epochs) uses the cache.
//
// Layout: DIR/<uuid>/<block>.<epoch>.<chunk>, each file the chunk's bytes plus a big-endian CRC32,
// written to a temp name and renamed (a crash leaves no torn entry). Entries are kept in LRU order
// in memory; the byte total (data only) stays at or below maxBytes. Entries found at start are
// adopted (oldest mtime first). A file that fails its CRC is dropped and counts as a miss.
import { crc32 } from 'node:zlib'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { Lifecycle } from '../lib/lifecycle'

// Cache line: a block is cached in chunks of this size, so a small read of a far block moves
// 1 MiB, not a whole (up to 64 MiB) block.
export const CACHE_CHUNK_BYTES = 1024 * 1024
// Remembered "snapshot epoch → version epoch" answers per (disk, block); bounded.
const VERSION_MEMO_MAX = 1_000_000
const ENTRY_RE = /^(\d+)\.(\d+)\.(\d+)$/
const UUID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/

export interface CommittedCacheOptions { dir: string, maxBytes: number, logger?: Logger }
export interface CommittedCacheStats { entries: number, bytes: number, maxBytes: number, hits: number, misses: number, evictions: number }

interface Entry { file: string, bytes: number }

export class CommittedCache {
  readonly dir: string
  readonly maxBytes: number
  private readonly log: Logger
  private readonly entries = new Map<string, Entry>()  // insertion order = LRU order (oldest first)
  private readonly versions = new Map<string, number | null>()
  private bytes = 0
  private hits = 0
  private misses = 0
  private evictions = 0
  private tmpSeq = 0

  private constructor (opts: CommittedCacheOptions) {
    this.dir = path.resolve(opts.dir)
    this.maxBytes = opts.maxBytes
    this.log = opts.logger ?? silentLogger
  }

  static async open (opts: CommittedCacheOptions): Promise<CommittedCache> {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < CACHE_CHUNK_BYTES) {
      throw UkaiError.badArgument(`cache size ${opts.maxBytes} is too small: at least ${CACHE_CHUNK_BYTES} bytes (one cache line)`)
    }
    const cache = new CommittedCache(opts)
    try {
      await fs.promises.mkdir(cache.dir, { recursive: true })
      await fs.promises.access(cache.dir, fs.constants.W_OK)
    } catch (err) {
      throw UkaiError.badArgument(`cache dir '${opts.dir}' is not a writable directory: ${(err as Error).message}`)
    }
    await cache.adopt()
    return cache
  }

  private static key (uuid: string, block: number, epoch: number, chunk: number): string {
    return `${uuid}/${block}.${epoch}.${chunk}`
  }

  // Entries left by an earlier run; oldest first so the LRU order roughly survives a restart.
  private async adopt (): Promise<void> {
    const found: Array<{ key: string, file: string, bytes: number, mtimeMs: number }> = []
    for (const uuid of await fs.promises.readdir(this.dir)) {
      const sub = path.join(this.dir, uuid)
      if (!UUID_RE.test(uuid) || !(await fs.promises.stat(sub)).isDirectory()) continue
      for (const name of await fs.promises.readdir(sub)) {
        const file = path.join(sub, name)
        if (!ENTRY_RE.test(name)) { await fs.promises.rm(file, { force: true }); continue } // a temp file of a crashed write
        const st = await fs.promises.stat(file)
        if (st.size < 4) { await fs.promises.rm(file, { force: true }); continue }
        found.push({ key: `${uuid}/${name}`, file, bytes: st.size - 4, mtimeMs: st.mtimeMs })
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs)
    for (const f of found) { this.entries.set(f.key, { file: f.file, bytes: f.bytes }); this.bytes += f.bytes }
    await this.evictTo(this.maxBytes)
    if (found.length > 0) this.log.info({ entries: this.entries.size, bytes: this.bytes }, 'committed-block cache adopted entries')
  }

  // --- which version a snapshot read returns ---

  // The version epoch a read of `block` at committed `epoch` returns: a number, null (no version:
  // zeros, or the parent for a clone), or undefined (not known here yet).
  versionAt (uuid: string, block: number, epoch: number): number | null | undefined {
    return this.versions.get(`${uuid}/${block}@${epoch}`)
  }

  rememberVersion (uuid: string, block: number, epoch: number, version: number | null): void {
    if (version !== null && version > epoch) throw UkaiError.internal(`version ${version} above the committed epoch ${epoch}`)
    if (this.versions.size >= VERSION_MEMO_MAX) this.versions.delete(this.versions.keys().next().value as string)
    this.versions.set(`${uuid}/${block}@${epoch}`, version)
  }

  // --- data ---

  async get (uuid: string, block: number, epoch: number, chunk: number): Promise<Buffer | null> {
    const key = CommittedCache.key(uuid, block, epoch, chunk)
    const e = this.entries.get(key)
    if (e === undefined) { this.misses++; return null }
    let raw: Buffer
    try {
      raw = await fs.promises.readFile(e.file)
    } catch (err) {
      this.drop(key, e)
      this.log.warn({ key, err: String(err) }, 'cache entry unreadable; dropped')
      this.misses++
      return null
    }
    const data = raw.subarray(0, raw.length - 4)
    if (raw.length < 4 || (crc32(data) >>> 0) !== raw.readUInt32BE(raw.length - 4)) {
      this.drop(key, e)
      await fs.promises.rm(e.file, { force: true })
      this.log.warn({ key }, 'cache entry failed its checksum; dropped')
      this.misses++
      return null
    }
    // Most recently used: move to the end.
    this.entries.delete(key)
    this.entries.set(key, e)
    this.hits++
    return data
  }

  async put (uuid: string, block: number, epoch: number, chunk: number, data: Buffer): Promise<void> {
    if (!UUID_RE.test(uuid)) throw UkaiError.internal(`bad disk uuid '${uuid}' for the cache`)
    const key = CommittedCache.key(uuid, block, epoch, chunk)
    if (this.entries.has(key) || data.length > this.maxBytes || this.life.closing) return
    await this.evictTo(this.maxBytes - data.length)
    const sub = path.join(this.dir, uuid)
    const file = path.join(sub, `${block}.${epoch}.${chunk}`)
    const tmp = path.join(sub, `.tmp-${process.pid}-${this.tmpSeq++}`)
    const sum = Buffer.alloc(4)
    sum.writeUInt32BE(crc32(data) >>> 0)
    try {
      await fs.promises.mkdir(sub, { recursive: true })
      await fs.promises.writeFile(tmp, Buffer.concat([data, sum]))
      await fs.promises.rename(tmp, file)
    } catch (err) {
      // A full or broken cache disk must not fail the read that wanted to cache.
      await fs.promises.rm(tmp, { force: true }).catch(() => {})
      this.log.warn({ key, err: String(err) }, 'could not store a cache entry')
      return
    }
    if (this.entries.has(key)) return // a concurrent put of the same immutable bytes won
    this.entries.set(key, { file, bytes: data.length })
    this.bytes += data.length
    // Concurrent puts each made room for themselves only: trim again (the newest entry goes last).
    if (this.bytes > this.maxBytes) await this.evictTo(this.maxBytes)
  }

  private drop (key: string, e: Entry): void {
    if (this.entries.get(key) !== e) return
    this.entries.delete(key)
    this.bytes -= e.bytes
  }

  private async evictTo (limit: number): Promise<void> {
    while (this.bytes > Math.max(0, limit) && this.entries.size > 0) {
      const [key, e] = this.entries.entries().next().value as [string, Entry]
      this.drop(key, e)
      this.evictions++
      await fs.promises.rm(e.file, { force: true })
    }
  }

  // Entries are files (none is held open): close() only stops new entries from being stored;
  // a put in flight finishes (its temp file is renamed or removed).
  private readonly life = new Lifecycle()

  close (): Promise<void> { return this.life.close() }

  stats (): CommittedCacheStats {
    return { entries: this.entries.size, bytes: this.bytes, maxBytes: this.maxBytes, hits: this.hits, misses: this.misses, evictions: this.evictions }
  }
}
