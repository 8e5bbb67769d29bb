// Short-circuit reads (as in HDFS): when a storage node runs on this agent's host, read its block
// files directly instead of asking it over gRPC. Writes stay on gRPC (fencing lives on the node).
//
// A node qualifies when its record names this host, it is alive, and its data dir holds the token
// it published (src/storagenode/local-read-token.ts): then we see the very files it serves.
// `LocateBlock` tells which version file a read at an epoch would use; that answer is cached per
// (disk, node, block), and the open file with it, within a bound on open descriptors: evicting
// closes the file but keeps the answer, so a random read over a disk larger than the bound opens
// a file again (no round trip to the node) instead of asking the node again.
//
// Every read is checked against the version's checksum sidecar (storagenode/page-checksums.ts),
// opened with the file: a mismatch — rot, or a write of this very page in flight on the node —
// answers null, so the read goes over gRPC, where the node checks again under its range lock
// and refuses rot (the disk then marks the replica stale). A version without a sidecar (older
// than checksums, until the scrub adopts it) is read over gRPC too. Two descriptors per entry.
// While this agent holds the disk's lease its entries keep the sidecar's sums (≤ 16 KiB each), so
// a 4 KiB read does no second pread: in a profile of random 4 KiB reads the check is ~2 % of the
// agent's CPU (allPagesMatch 1.7 %), the sidecar read gone from it. The pages are summed as they
// are read (storagenode/pread-sums.ts: on libuv's pool for reads above 256 KiB), so a 1 MiB read
// no longer spends ~0.3–0.4 ms of this one thread on crc32c (docs/performance.md).
// Benchmark switch (`ukai mount --bench-no-checksums`, with nodes run the same way; only
// bench/ab-cost.ts uses it): `verifyChecksums: false` reads the files unchecked, without
// their sidecars, to measure what the checks cost. Never a default.
//
// A stale byte is a defect, so every cached entry is dropped when what it answered may have
// changed (see DiskLocalReads). Anything unexpected drops the entry and the caller reads over
// gRPC instead: this path may make a read faster, never fail it.
import path from 'node:path'
import { Logger, silentLogger } from '../log'
import { readLocalReadToken } from '../storagenode/local-read-token'
import { CHECKSUM_PAGE_BYTES, entriesOf, entryOffset, pageSpan, readEntriesSync } from '../storagenode/page-checksums'
import { firstDifferentPage, preadSumsAddon, readWithSums } from '../storagenode/pread-sums'
import { NodePool } from './node-pool'
import { OpenVersionFile, closeWhenIdle, openWithSums, readUnchecked, wholeSidecar } from './local-version-file'
import { Lifecycle } from '../lib/lifecycle'

// Open version files kept across all disks of this agent (least recently used closed first;
// `ukai mount --local-read-files`). 1024 covers 4 GiB of 4 MiB blocks; a file closed for the bound
// costs one open() when read again, not a LocateBlock. Node raises its soft fd limit to the hard
// one at start, so this stays well inside it.
export const LOCAL_OPEN_FILES_MAX_DEFAULT = 1024
// LocateBlock is an in-memory lookup on the node; when it takes longer than this the node is
// busy or stopped, and the gRPC path (with its failover) is the better bet.
const LOCATE_TIMEOUT_MS = 2000

interface LocalNode { dataDir: string, token: string }

interface Entry extends OpenVersionFile {
  disk: DiskLocalReads
  node: string
  block: number
  readEpoch: number
  versionEpoch: number | null   // null: no version <= readEpoch
}

// What a short-circuit read answers: the bytes, 'absent' (no version: a clone reads its parent),
// or null (not possible now: read over gRPC).
export type LocalReadResult = Buffer | 'absent' | null

export class LocalReads {
  private readonly pool: NodePool
  private readonly log: Logger
  private readonly openFilesMax: number
  readonly verifyChecksums: boolean
  private nodes = new Map<string, LocalNode>()
  private readonly announced = new Map<string, string>()  // node → token we logged for
  private readonly refused = new Map<string, string>()    // node → token whose files we cannot open
  private readonly disks = new Set<DiskLocalReads>()
  private readonly lru = new Map<Entry, true>()           // entries holding an fd, oldest first
  private closed = false

  constructor (opts: { pool: NodePool, openFilesMax?: number, verifyChecksums?: boolean, logger?: Logger }) {
    this.pool = opts.pool
    this.verifyChecksums = opts.verifyChecksums !== false
    this.log = opts.logger ?? silentLogger
    this.openFilesMax = opts.openFilesMax ?? LOCAL_OPEN_FILES_MAX_DEFAULT
    if (this.verifyChecksums) preadSumsAddon()  // a missing build fails the mount at start
    this.pool.onNodesChanged(() => this.recheckNodes())
    this.recheckNodes()
  }

  // Which nodes qualify, re-evaluated whenever the node list or a liveness record changes (the
  // nodes refresh theirs every few seconds: that also re-reads the token files, cheaply).
  recheckNodes (): void {
    if (this.closed) return
    const next = new Map<string, LocalNode>()
    for (const n of this.pool.list()) {
      const a = n.alive
      if (!this.pool.onThisHost(n) || a === null || a.dataDir === undefined || a.localReadToken === undefined || a.localReadToken === '') continue
      if (!path.isAbsolute(a.dataDir) || readLocalReadToken(a.dataDir) !== a.localReadToken) continue
      if (this.refused.has(n.id) && this.refused.get(n.id) !== a.localReadToken) this.refused.delete(n.id)
      next.set(n.id, { dataDir: a.dataDir, token: a.localReadToken })
      if (this.announced.get(n.id) !== a.localReadToken) {
        this.announced.set(n.id, a.localReadToken)
        this.log.info({ node: n.id, dataDir: a.dataDir }, 'short-circuit reads from this node')
      }
    }
    for (const [id, old] of this.nodes) {
      const now = next.get(id)
      // Gone, or restarted (new token): nothing cached from before is trusted.
      if (now === undefined || now.token !== old.token || now.dataDir !== old.dataDir) {
        for (const d of this.disks) d.dropNode(id)
      }
    }
    this.nodes = next
  }

  capable (node: string): boolean { return this.nodes.has(node) && !this.refused.has(node) }

  // This agent cannot read the node's files after all (permissions): gRPC only, until the node
  // restarts (a new token) — instead of a LocateBlock round trip before every gRPC read.
  refuse (node: string, why: string): void {
    const token = this.nodes.get(node)?.token
    if (token === undefined || this.refused.get(node) === token) return
    this.refused.set(node, token)
    this.log.warn({ node, why }, 'no short-circuit reads from this node')
    for (const d of this.disks) d.dropNode(node)
  }
  dataDirOf (node: string): string | undefined { return this.nodes.get(node)?.dataDir }

  forDisk (diskUuid: string): DiskLocalReads {
    const d = new DiskLocalReads(this, this.pool, diskUuid)
    this.disks.add(d)
    return d
  }

  forget (d: DiskLocalReads): void { this.disks.delete(d) }

  // The entry was used: most recently used now; past the bound, the oldest file is closed (its
  // entry stays: the next read of it reopens the same path).
  touch (e: Entry): void {
    if (e.fd === null) return
    e.evicted = false
    this.lru.delete(e)
    this.lru.set(e, true)
    while (this.lru.size > this.openFilesMax) {
      const oldest = this.lru.keys().next().value as Entry
      this.lru.delete(oldest)
      oldest.evicted = true
      closeWhenIdle(oldest)
    }
  }

  untrack (e: Entry): void { this.lru.delete(e) }

  get openFiles (): number { return this.lru.size }

  private readonly life = new Lifecycle({
    release: async () => {
      this.closed = true
      await Promise.all([...this.disks].map(async d => { await d.close() }))
    }
  })

  close (): Promise<void> { return this.life.close() }
}

// The short-circuit state of one open disk. Invalidation rules (the caller, VirtualDisk, reports
// the events):
// - the disk's read epoch moved (snapshot commit, reload): everything is dropped;
// - the placement changed (any segment reloaded or rewritten, stale marking included): everything;
// - this agent mutates block B (write, discard, copy-on-write of a clone's parent block): a
//   per-block generation moves at the start and the end, B's entries that cannot be the version
//   written are dropped at both points, and a lookup that was in flight meanwhile is used once
//   but not kept;
// - while this host does not hold the lease, another may write: only an entry whose version is
//   the read epoch's own is trusted (others write into that same file); an absent or older
//   version is used once and looked up again next time, because another host's first write
//   creates a new file;
// - a version file that was deleted or replaced (a discard, garbage collection) has no links
//   left: checked at every read (fstat) and looked up again.
export class DiskLocalReads {
  private readonly owner: LocalReads
  private readonly pool: NodePool
  readonly diskUuid: string
  private readonly entries = new Map<number, Entry[]>()   // block → one entry per node
  private epoch = -1
  private generation = 0                                   // moves on every drop-all
  private readonly blockGeneration = new Map<number, number>()
  private locating = 0
  private closed = false

  constructor (owner: LocalReads, pool: NodePool, diskUuid: string) {
    this.owner = owner
    this.pool = pool
    this.diskUuid = diskUuid
  }

  capable (node: string): boolean { return !this.closed && this.owner.capable(node) }

  // Reads [offset, offset+length) of `block` as the node would answer a read at `readEpoch`.
  async read (node: string, block: number, readEpoch: number, offset: number, length: number, holdsLease: boolean): Promise<LocalReadResult> {
    if (this.closed || !this.owner.capable(node)) return null
    if (readEpoch !== this.epoch) { this.dropAll(); this.epoch = readEpoch }
    let entry = this.find(node, block)
    if (entry !== undefined && !holdsLease && entry.versionEpoch !== readEpoch) { this.drop(entry); entry = undefined }
    let once = false
    if (entry === undefined) {
      const located = await this.locate(node, block, readEpoch, holdsLease)
      if (located === null) return null
      entry = located.entry
      once = !located.kept
    }
    try {
      if (entry.versionEpoch === null) return 'absent'
      return await this.pread(entry, offset, length, holdsLease)
    } catch {
      this.drop(entry)
      return null
    } finally {
      if (once) this.drop(entry)
    }
  }

  // Start and end of a mutation of `block` by this agent writing version `writeEpoch` (null:
  // the mutation may replace or remove any version, e.g. a discard).
  mutating (block: number, writeEpoch: number | null): void {
    // Only a lookup in flight compares generations; with none, a later one starts from here.
    if (this.locating > 0) this.blockGeneration.set(block, (this.blockGeneration.get(block) ?? 0) + 1)
    for (const e of [...(this.entries.get(block) ?? [])]) {
      if (writeEpoch === null || e.versionEpoch !== writeEpoch) this.drop(e)
      else e.sums = null  // its pages and their sums change now: read them again
    }
  }

  // Placement or epoch changed: nothing cached is trusted, nor a lookup in flight.
  dropAll (): void {
    this.generation++
    for (const list of [...this.entries.values()]) for (const e of [...list]) this.drop(e)
  }

  dropNode (node: string): void {
    this.generation++
    for (const list of [...this.entries.values()]) for (const e of [...list]) if (e.node === node) this.drop(e)
  }

  drop (e: Entry): void {
    if (e.dropped) return
    e.dropped = true
    const list = this.entries.get(e.block)
    if (list !== undefined) {
      const i = list.indexOf(e)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) this.entries.delete(e.block)
    }
    this.owner.untrack(e)
    closeWhenIdle(e)
  }

  private readonly life = new Lifecycle({
    release: () => {
      this.dropAll()
      this.closed = true
      this.owner.forget(this)
    }
  })

  close (): Promise<void> { return this.life.close() }

  get cachedEntries (): number {
    let n = 0
    for (const list of this.entries.values()) n += list.length
    return n
  }

  private find (node: string, block: number): Entry | undefined {
    return this.entries.get(block)?.find(e => e.node === node)
  }

  // Asks the node which version a read at readEpoch uses and opens it. null when that fails.
  private async locate (node: string, block: number, readEpoch: number, holdsLease: boolean): Promise<{ entry: Entry, kept: boolean } | null> {
    const generation = this.generation
    const blockGeneration = this.blockGeneration.get(block) ?? 0
    this.locating++
    let answer
    try {
      answer = await this.pool.client(node).locateBlock({ diskUuid: this.diskUuid, block, epoch: readEpoch }, LOCATE_TIMEOUT_MS)
    } catch {
      return null
    } finally {
      this.locating--
    }
    // Compared before the per-block generations may be forgotten (below).
    const stable = generation === this.generation && blockGeneration === (this.blockGeneration.get(block) ?? 0) && readEpoch === this.epoch
    if (this.locating === 0) this.blockGeneration.clear()  // nobody in flight compares them any more
    const dataDir = this.owner.dataDirOf(node)
    if (this.closed || dataDir === undefined) return null
    let fd: number | null = null
    let sumFd: number | null = null
    if (answer.found) {
      // The node names the file; it must be the one the layout says, inside its data dir.
      if (answer.epoch > readEpoch || answer.path !== `disks/${this.diskUuid}/${block}.${answer.epoch}`) return null
      try {
        const opened = openWithSums(path.join(dataDir, answer.path), this.owner.verifyChecksums)
        if (opened === null) return null  // no checksums (yet): gRPC
        fd = opened.fd; sumFd = opened.sumFd
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EACCES' || code === 'EPERM') this.owner.refuse(node, `cannot open its block files: ${code}`)
        return null  // removed meanwhile (a discard, a relocation): gRPC knows better
      }
    }
    const entry: Entry = { disk: this, node, block, readEpoch, versionEpoch: answer.found ? answer.epoch : null, fd, sumFd, sums: null, evicted: false, reading: 0, dropped: false }
    const kept = stable && (holdsLease || entry.versionEpoch === readEpoch)
    if (kept) {
      const old = this.find(node, block)
      if (old !== undefined) this.drop(old)
      let list = this.entries.get(block)
      if (list === undefined) { list = []; this.entries.set(block, list) }
      list.push(entry)
      this.owner.touch(entry)
    }
    return { entry, kept }
  }

  private async pread (e: Entry, offset: number, length: number, cacheSums: boolean): Promise<Buffer> {
    if (e.dropped && e.fd === null) throw new Error('entry was dropped')
    if (e.fd === null) {
      // Closed for the bound: the same file again. Gone meanwhile (ENOENT): the caller drops the
      // entry and reads over gRPC.
      const dataDir = this.owner.dataDirOf(e.node)
      if (dataDir === undefined) throw new Error(`node ${e.node} no longer qualifies`)
      const opened = openWithSums(path.join(dataDir, 'disks', this.diskUuid, `${e.block}.${e.versionEpoch as number}`), this.owner.verifyChecksums)
      if (opened === null) throw new Error('version file has no checksums')
      e.fd = opened.fd; e.sumFd = opened.sumFd
    }
    const fd = e.fd
    const sumFd = e.sumFd  // null only with the benchmark switch (verifyChecksums false)
    // A version deleted or replaced on the node (whole-block discard, GC) keeps its bytes for us
    // through the open descriptor: never read those.
    // (fstat's st_nlink alone, natively: fs.fstatSync's Stats object cost 7-12 % of the agent's
    // CPU on random 4 KiB reads.)
    if (preadSumsAddon().linkCountSync(fd) === 0) throw new Error('version file was removed')
    if (!e.dropped) this.owner.touch(e)
    // Whole pages, as they were summed; the caller's range is cut out after the check.
    const span = pageSpan(offset, length)
    const want = length
    const at = span.start
    length = span.end - span.start
    let buf: Buffer
    // `reading` holds both descriptors open until the check is done (closeWhenIdle waits for it).
    e.reading++
    try {
      if (sumFd === null) {
        buf = await readUnchecked(fd, at, length)
      } else if (cacheSums && e.sums !== null) {
        // The bytes and their pages' values in one native call, on the pool when large: the
        // crc32c runs where the bytes land, not on this loop (storagenode/pread-sums.ts).
        const r = await readWithSums(fd, at, length)
        buf = r.data
        this.check(e, sumFd, r.sums, at / CHECKSUM_PAGE_BYTES, cacheSums)
      } else {
        // No sums cached (no lease: others may write): the sidecar's entries read in the same
        // native call, after the bytes. Measured (random 4 KiB reads of a read-only handle, agent
        // CPU profile): the second pread from JavaScript was 13 % of the agent's CPU.
        const firstPage = at / CHECKSUM_PAGE_BYTES
        const r = await readWithSums(fd, at, length, { fd: sumFd, position: entryOffset(firstPage) })
        buf = r.data
        e.sums = null
        if (r.badPage >= 0) throw new Error('checksum mismatch: read over gRPC, where the node checks under its lock')
        if (cacheSums) e.sums = wholeSidecar(sumFd)
      }
    } finally {
      e.reading--
      closeWhenIdle(e)  // dropped or evicted meanwhile: its fds go now
    }
    return buf.subarray(offset - at, offset - at + want)
  }

  // The values of whole pages from `firstPage` on (`got`, summed as they were read) against the
  // stored sums: the cached ones first (no pread of the sidecar); none cached, or a mismatch with
  // them (they may predate a write), the sidecar's, read after the bytes: a write landing in
  // between shows as a mismatch, never as a match. A mismatch there throws: the caller reads over gRPC, where the node checks again.
  private check (e: Entry, sumFd: number, got: Buffer, firstPage: number, cacheSums: boolean): void {
    const pages = got.length / 4
    // Without the lease (lost or handed over since they were cached) others write: not trusted.
    if (cacheSums && e.sums !== null && firstDifferentPage(got, entriesOf(e.sums, firstPage, pages), firstPage) < 0) return
    e.sums = null
    if (firstDifferentPage(got, readEntriesSync(sumFd, firstPage, pages), firstPage) >= 0) throw new Error('checksum mismatch: read over gRPC, where the node checks under its lock')
    if (cacheSums) e.sums = wholeSidecar(sumFd)
  }
}
