// The data path of one open disk (VirtualDisk holds one): a read split per block, each piece
// from a same-host node's file (short-circuit-reads.ts) or the nearest in-sync replica
// (replica-read.ts), a clone's block it never wrote from its parent; a write or discard split
// per block, overlapping ones in arrival order, each sent to every writable replica and a replica
// that failed it marked stale (the invariants at the top of virtual-disk.ts). Separate from the
// disk engine's class, which owns the record, the lease, snapshots and the lifecycle: this owns
// what one I/O does, and the writes in flight that a snapshot commit and a hand-over wait for.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger } from '../log'
import { HeldLease } from '../meta/lease'
import { DiskMap } from '../meta/disk-map'
import { Replica, ReplicaSet, readableReplicas, writableReplicas } from '../meta/placement'
import { DiskIoCounters, DiskRecord } from '../meta/schema'
import { RangeLocks } from '../lib/range-locks'
import { BlockLocks } from '../lib/block-locks'
import { splitRange } from './block-range'
import { DiskLocalReads } from './short-circuit-reads'
import { NodePool } from './node-pool'
import { ParentChain } from './parent-chain'
import { IO_RETRY_PAUSE_MS, readFromReplicas } from './replica-read'
import { nearestFirst } from '../meta/placement-policy'
import { sleep } from '../lib/timers'
import { forEachBounded } from '../lib/worker-pool'
import { IoThrottle } from '../lib/io-throttle'
import { DirtyFlusher } from './dirty-flush'
import { traceWrite, writeTraceOn } from '../lib/write-trace'

// Blocks a large discard (a whole-disk TRIM) keeps in flight; each goes to every replica.
// Measured: 64 GiB of 4 MiB blocks, 2 replicas, nothing written: 5-8 s.
const DISCARD_BLOCKS_IN_FLIGHT = 64

// A change that may be acknowledged, and when its syncing replicas answered too.
interface Acked { tail: Promise<void> }
// The syncing replicas' answers still owed for a change already acknowledged (a promise cannot
// carry a promise: it would be awaited too).
interface Trailing { answered: Promise<void> }
// Sends one change to a node. `own`: the request must not use the caller's buffer past the
// acknowledgement (a trailing write: see mutateBlockLocked).
type SendChange = (node: string, own: boolean) => Promise<string>

export interface DiskDataPathDeps {
  name: string
  pool: NodePool
  map: DiskMap
  blockLocks: BlockLocks
  flusher: DirtyFlusher
  throttle: IoThrottle
  io: DiskIoCounters
  local: DiskLocalReads | undefined
  // The blocks of a clone this holder already made its own (VirtualDisk clears it with a new lease).
  materialized: Set<number>
  ioRetryMs: number
  signal: AbortSignal          // the disk destroyed: waiting writes fail
  log: Logger
  record: () => DiskRecord     // the disk's record now (a reload, a snapshot commit replace it)
  chain: () => ParentChain | null
  holdsLease: () => boolean
  ensureLease: () => Promise<HeldLease>
  onFenced: () => void         // a node refused a change: the lease moved (drop ours)
  onStale: (node: string, code: string) => void  // a replica was marked stale
}

export class DiskDataPath {
  private inFlightWrites = 0
  private mutationCount = 0
  private writesDrained: Array<() => void> = []
  // Writes acknowledged whose syncing replicas have not all answered yet (mutateBlockLocked).
  private readonly trailing = new Set<Promise<void>>()
  // Overlapping writes and discards of a block go out in the order they arrived, one after the
  // other: the kernel hands us direct writes to the file in parallel (FOPEN_PARALLEL_DIRECT_WRITES),
  // and two overlapping ones in flight at once could otherwise land in different orders on two
  // replicas (a retry, a clone's copy-on-write first). Disjoint ranges still run in parallel.
  private readonly rangeOrder = new RangeLocks()
  private readTurn = 0
  // While a snapshot commits, new writes wait here (the ones in flight drain first).
  private writeGate: Promise<void> | null = null

  constructor (private readonly d: DiskDataPathDeps) {}

  private get record (): DiskRecord { return this.d.record() }
  private get sizeBytes (): number { return this.d.record().sizeBytes }
  private get chain (): ParentChain | null { return this.d.chain() }
  private replicasOf (block: number): ReplicaSet { return this.d.map.replicasOf(block) }

  // Block writes and discards ended on this host so far: whoever cached which blocks hold data
  // (vdisk/allocation.ts) knows to ask again. Counted when each is acknowledged (or failed), not
  // when its syncing replicas answered, so a change acknowledged after such a cache was filled
  // always moves it.
  get mutations (): number { return this.mutationCount }

  // A snapshot commit under way finishes, then the writes in flight (the start of a hand-over).
  async quiesce (): Promise<void> {
    while (this.writeGate !== null) await this.writeGate  // a snapshot commit finishes first
    await this.writesEnded()
  }

  // Every write and discard in flight has ended (a write: with its trailing answers).
  private async writesEnded (): Promise<void> {
    while (this.inFlightWrites > 0) await new Promise<void>(resolve => this.writesDrained.push(resolve))
  }

  private writeEnded (): void {
    if (--this.inFlightWrites === 0) for (const wake of this.writesDrained.splice(0)) wake()
  }

  // Every trailing write started before the call has its answers (flushEverywhere waits for
  // them, so what they wrote is in its flush).
  async trailingDrained (): Promise<void> { await Promise.allSettled([...this.trailing]) }

  // Runs `fn` with new writes held at the gate and those in flight drained (a snapshot commit).
  async withWritesHeld<T> (fn: () => Promise<T>): Promise<T> {
    while (this.writeGate !== null) await this.writeGate
    let open!: () => void
    this.writeGate = new Promise<void>(resolve => { open = resolve })
    try {
      await this.writesEnded()
      return await fn()
    } finally {
      this.writeGate = null
      open()
    }
  }

  async read (offset: number, length: number): Promise<Buffer> {
    if (offset >= this.sizeBytes || length === 0) return Buffer.alloc(0)
    const len = Math.min(length, this.sizeBytes - offset)
    const turn = this.d.throttle.admit(len)
    if (turn !== undefined) await turn
    const pieces = splitRange(offset, len, this.record.blockSizeBytes)
    if (pieces.length === 1) {
      // Most reads stay inside one block: the block's answer is the result (no second copy;
      // the FUSE adapter copies it into the kernel's buffer anyway).
      const data = await this.readBlock(pieces[0].block, pieces[0].offsetInBlock, len)
      this.d.io.readBytes += len
      return data
    }
    const out = Buffer.allocUnsafe(len)
    await Promise.all(pieces.map(async (p) => {
      const data = await this.readBlock(p.block, p.offsetInBlock, p.length)
      data.copy(out, p.offsetInRange)
    }))
    this.d.io.readBytes += len
    return out
  }

  // Nearest in-sync replica first; on failure the next; when none answers, retry for a while.
  // A clone's block it never wrote reads from its parent.
  private async readBlock (block: number, offsetInBlock: number, length: number): Promise<Buffer> {
    const chain = this.chain
    const local = this.d.local
    const readable = local === undefined ? [] : readableReplicas(this.replicasOf(block))
    const nearest = readable.length === 0 ? undefined : nearestFirst(this.d.pool, readable, this.readTurn)[0]
    if (local !== undefined && nearest !== undefined && local.capable(nearest.node)) {
      // Among this host's replicas always the same one (the lowest id): reading a file costs the
      // node nothing, so there is no load to spread, and one open file per block suffices.
      const node = readable.map(r => r.node).filter(n => local.capable(n)).sort()[0]
      const got = await local.read(node, block, this.record.epoch, offsetInBlock, length, this.d.holdsLease())
      if (got !== null && (got !== 'absent' || chain === null)) {
        this.d.io.localReadBytes = (this.d.io.localReadBytes ?? 0) + length
        return got === 'absent' ? Buffer.alloc(length) : got
      }
      // A clone's block it has no version of reads through to the parent, as below.
      if (got === 'absent') return await (chain as ParentChain).read(block, offsetInBlock, length)
    }
    const data = await readFromReplicas({
      pool: this.d.pool,
      candidates: () => nearestFirst(this.d.pool, readableReplicas(this.replicasOf(block)), this.readTurn++),
      diskUuid: this.record.uuid,
      block,
      epoch: this.record.epoch,
      offset: offsetInBlock,
      length,
      absentAsNull: chain !== null,
      ioRetryMs: this.d.ioRetryMs,
      what: `block ${block} of ${this.d.name}`,
      onCorrupt: async (nodes) => { await this.markCorrupt(block, nodes) }
    })
    return data ?? await (chain as ParentChain).read(block, offsetInBlock, length)
  }

  // Replicas whose node refused the block for a checksum mismatch, after another replica served
  // it: marked stale so repair copies the block again (replica-read.ts). A failed marking is
  // logged, not the read's failure: the good bytes were served, the next read finds it again.
  private async markCorrupt (block: number, nodes: string[]): Promise<void> {
    for (const node of nodes) {
      this.d.log.error({ node, block }, 'replica failed its checksum: marking it stale')
      this.d.local?.mutating(block, null)  // nothing short-circuit read from it stays cached
      try {
        await this.d.map.markStale(node, [block])
        this.d.onStale(node, 'CHECKSUM')
      } catch (err) {
        safetyCatch(err)
        this.d.log.warn({ node, block, err: (err as Error).message }, 'could not mark the corrupt replica stale (the next read finds it again)')
      }
    }
  }

  async write (offset: number, data: Buffer): Promise<void> {
    if (offset + data.length > this.sizeBytes) {
      throw UkaiError.outOfRange(`write of ${data.length} bytes at ${offset} ends past the end of ${this.d.name} (${this.sizeBytes} bytes)`)
    }
    if (data.length === 0) return
    this.d.signal.throwIfAborted()
    const turn = this.d.throttle.admit(data.length)
    if (turn !== undefined) await turn
    const lease = await this.d.ensureLease()
    while (this.writeGate !== null) await this.writeGate
    if (writeTraceOn) traceWrite('disk.lease', offset)
    this.inFlightWrites++
    const tails: Array<Promise<void>> = []
    try {
      const acks = await Promise.allSettled(splitRange(offset, data.length, this.record.blockSizeBytes).map(p =>
        this.writeBlock(lease, p.block, p.offsetInBlock, data.subarray(p.offsetInRange, p.offsetInRange + p.length))))
      for (const a of acks) if (a.status === 'fulfilled') tails.push(a.value.tail)
      const failed = acks.find(a => a.status === 'rejected')
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
      this.d.io.writeBytes += data.length
      if (writeTraceOn) traceWrite('disk.done', offset)
    } finally {
      // In flight until its syncing replicas answered too: a hand-over or a snapshot commit
      // waits for them (trailing writes, mutateBlockLocked).
      if (tails.length === 0) this.writeEnded()
      else void Promise.allSettled(tails).then(() => { this.writeEnded() })
    }
  }

  private async writeBlock (lease: HeldLease, block: number, offsetInBlock: number, data: Buffer): Promise<Acked> {
    const epoch = this.record.epoch
    // A trailing write's request gets a copy: the caller's buffer (FUSE's, NBD's) may be reused
    // once the guest has its answer — a trailing request still queued then went out with 0 bytes
    // (test/vdisk-trailing-writes.test.ts caught it: the target "acknowledged" an empty write).
    return await this.mutateBlock(lease, block, offsetInBlock, data.length, 'write', epoch, (node, own) => this.d.pool.client(node).write({
      diskUuid: this.record.uuid, block, epoch, offset: offsetInBlock, data: own ? Buffer.from(data) : data, leaseEpoch: lease.leaseEpoch
    }))
  }

  // Makes [offset, offset+length) read as zeros and gives its space back on every replica
  // (guest TRIM, fallocate PUNCH_HOLE). Fenced and replicated like a write. Only the head
  // epoch changes: a committed snapshot's version of a block stays as it is on the nodes.
  async discard (offset: number, length: number): Promise<void> {
    const end = Math.min(offset + length, this.sizeBytes)  // past the end is already nothing
    if (end <= offset) return
    this.d.signal.throwIfAborted()
    // One operation, no bytes: a discard moves no data (a whole-disk TRIM is one request).
    const turn = this.d.throttle.admit(0)
    if (turn !== undefined) await turn
    const lease = await this.d.ensureLease()
    this.inFlightWrites++
    try {
      const pieces = splitRange(offset, end - offset, this.record.blockSizeBytes)
      await forEachBounded(pieces, DISCARD_BLOCKS_IN_FLIGHT, async (p) => {
        const { tail } = await this.mutateBlock(lease, p.block, p.offsetInBlock, p.length, 'discard', null, node => this.d.pool.client(node).discard({
          diskUuid: this.record.uuid, block: p.block, epoch: this.record.epoch, offset: p.offsetInBlock, length: p.length, leaseEpoch: lease.leaseEpoch
        }))
        await tail  // a discard is rare and large: it waits for every replica, as before
      })
    } finally {
      this.writeEnded()
    }
  }

  // `writeEpoch`: the version the change writes into (null: it may remove or replace versions).
  // Resolves when the change may be acknowledged; its `tail` when the syncing replicas answered
  // too. The block's write lock and its range turn are held until the tail: an overlapping change
  // and a relocation's copy or in-sync marking of the block wait for it.
  private mutateBlock (lease: HeldLease, block: number, offsetInBlock: number, length: number, verb: string, writeEpoch: number | null, send: SendChange): Promise<Acked> {
    let ack!: (a: Acked) => void
    let refuse!: (err: unknown) => void
    const acked = new Promise<Acked>((resolve, reject) => { ack = resolve; refuse = reject })
    const tail: Promise<void> = this.rangeOrder.run(String(block), offsetInBlock, offsetInBlock + length, async () => {
      await this.d.blockLocks.acquireWrite(block)
      if (writeTraceOn) traceWrite('disk.locked', block, offsetInBlock)
      this.d.local?.mutating(block, writeEpoch)
      // The change is over for what the guest sees (local reads' cache, the allocation answers)
      // at its acknowledgement: syncing replicas are never read.
      let over = false
      const end = (): void => {
        if (over) return
        over = true
        this.d.local?.mutating(block, writeEpoch)
        this.mutationCount++
      }
      try {
        const trailing = await this.mutateBlockLocked(lease, block, verb, send)
        if (writeTraceOn) traceWrite('disk.acked', block, offsetInBlock)
        end()
        ack({ tail })
        if (trailing !== null) {
          this.trailing.add(trailing.answered)
          try { await trailing.answered } finally { this.trailing.delete(trailing.answered) }
        }
      } catch (err) {
        if (over) this.d.log.error({ block, verb, err: String(err) }, 'the trailing answers of an acknowledged change failed')
        refuse(err)
      } finally {
        end()
        this.d.blockLocks.releaseWrite(block)
      }
    })
    return acked
  }

  // Sends one change of `block` to every writable replica; see the invariants at the top of
  // virtual-disk.ts. Returns once it may be acknowledged, with what is left: the answers of
  // replicas still syncing (trailing writes, below), or null.
  //
  // Trailing writes. A relocation's targets are `syncing` replicas: never read, in sync only once
  // the relocation marks them so. When every in-sync replica acknowledged the change, it is
  // acknowledged without waiting for the syncing ones — across a WAN that wait was a round trip
  // per guest write for the whole relocation, and a live migration's stop drained one such write
  // (docs/performance.md, migration, "What to do next" 7). What keeps it safe: the block's write
  // lock is held until they answered, and a syncing replica that failed is marked stale before
  // it is let go; a relocation marks a block's targets in sync only under the block's copy lock
  // (which waits for write locks); a hand-over, a snapshot commit and flushEverywhere wait for
  // trailing writes; their requests carry their own copy of the data. So no syncing replica
  // becomes readable without every write acknowledged before (docs/architecture.md).
  private async mutateBlockLocked (lease: HeldLease, block: number, verb: string, send: SendChange): Promise<Trailing | null> {
    const deadline = Date.now() + this.d.ioRetryMs
    let targets: Replica[]
    // Each fulfilled one: the incarnation of the node process that acknowledged the change.
    let results: Array<PromiseSettledResult<string>>
    for (;;) {
      targets = writableReplicas(this.replicasOf(block))
      if (targets.length === 0) throw UkaiError.io(`block ${block} of ${this.d.name} has no writable replica`)
      // A clone's block is first given its own copy of the parent's version on each replica.
      const chain = this.d.materialized.has(block) ? null : this.chain
      const inSync = targets.flatMap((r, i) => r.state === 'in-sync' ? [i] : [])
      const mayTrail = inSync.length > 0 && inSync.length < targets.length
      // Each send settles to its result and never rejects: a syncing replica's may fail before
      // the in-sync ones answered, while nothing awaits it yet (a hung node's client fails a
      // request at once) — a rejection nobody handled, which ended the agent's process.
      const sends = targets.map(async (r): Promise<PromiseSettledResult<string>> => {
        try {
          if (chain !== null) await chain.materialize(this.record, block, r.node, lease.leaseEpoch)
          return { status: 'fulfilled', value: await send(r.node, mayTrail && r.state !== 'in-sync') }
        } catch (reason) {
          return { status: 'rejected', reason }
        }
      })
      if (mayTrail) {
        const first = await Promise.all(inSync.map(i => sends[i]))
        if (first.every(r => r.status === 'fulfilled')) {
          inSync.forEach((i, k) => this.d.flusher.note(targets[i].node, block, lease.leaseEpoch, (first[k] as PromiseFulfilledResult<string>).value))
          return { answered: this.trailSyncing(lease, block, verb, targets, sends, inSync) }
        }
      }
      results = await Promise.all(sends)
      // No replica reachable: nothing can be marked stale (that would lose the block), so wait
      // for one to come back, up to the deadline.
      const allUnavailable = results.every(r => r.status === 'rejected' && isUkaiError(r.reason, 'UNAVAILABLE'))
      if (!allUnavailable || Date.now() >= deadline) break
      await sleep(IO_RETRY_PAUSE_MS, { signal: this.d.signal })
    }
    if (this.chain !== null && results.every(r => r.status === 'fulfilled')) this.d.materialized.add(block)
    const failed: Array<{ replica: Replica, err: unknown }> = []
    results.forEach((res, i) => {
      if (res.status === 'fulfilled') this.d.flusher.note(targets[i].node, block, lease.leaseEpoch, res.value)
      else failed.push({ replica: targets[i], err: res.reason })
    })
    if (failed.some(f => isUkaiError(f.err, 'FENCED'))) {
      this.d.onFenced()
      throw UkaiError.fenced(`${verb} to ${this.d.name} refused: the lease moved to another host (epoch ${lease.leaseEpoch} is stale)`)
    }
    if (failed.length === 0) return null
    if (failed.length === targets.length) {
      const why = failed.map(f => `${f.replica.node}: ${(f.err as Error).message}`).join('; ')
      // Full everywhere is ENOSPC for the guest, not a generic I/O error.
      if (failed.some(f => isUkaiError(f.err, 'NO_SPACE'))) throw UkaiError.noSpace(`${verb} to block ${block} of ${this.d.name}: no replica has space (${why})`)
      throw UkaiError.io(`${verb} to block ${block} of ${this.d.name} failed on every replica: ${why}`)
    }
    for (const f of failed) await this.leaveBehind(f.replica, block, verb, f.err)
    return null
  }

  // A replica that failed a change is marked stale (see the invariants in virtual-disk.ts).
  private async leaveBehind (replica: Replica, block: number, verb: string, err: unknown): Promise<void> {
    this.d.log.warn({ node: replica.node, block, verb, err: (err as Error).message }, 'replica write failed')
    // A hung replica is left behind for the whole disk at once (see markHungNodeStale).
    if (this.d.pool.isHung(replica.node)) await this.d.map.markHungNodeStale(replica.node, [block])
    else await this.d.map.markStale(replica.node, [block])
    this.d.onStale(replica.node, (err as { code?: string }).code ?? 'UNKNOWN')
  }

  // The syncing replicas' answers to a change already acknowledged (see mutateBlockLocked). A
  // failed one is marked stale before the block's lock is let go, retried while ZooKeeper does
  // not take it (the replica must not be marked in sync without this change); a FENCED one means
  // the lease moved: the next holder copies the block again, as it does every syncing block.
  private async trailSyncing (lease: HeldLease, block: number, verb: string, targets: Replica[], sends: Array<Promise<PromiseSettledResult<string>>>, waited: number[]): Promise<void> {
    const rest = targets.flatMap((r, i) => waited.includes(i) ? [] : [i])
    const results = await Promise.all(rest.map(i => sends[i]))
    if (this.chain !== null && results.every(r => r.status === 'fulfilled')) this.d.materialized.add(block)
    for (const [k, res] of results.entries()) {
      const replica = targets[rest[k]]
      if (res.status === 'fulfilled') { this.d.flusher.note(replica.node, block, lease.leaseEpoch, res.value); continue }
      if (isUkaiError(res.reason, 'FENCED')) {
        this.d.log.warn({ node: replica.node, block, verb }, 'syncing replica refused a trailing write: the lease moved')
        this.d.onFenced()
        continue
      }
      for (let attempt = 1; ; attempt++) {
        try {
          await this.leaveBehind(replica, block, verb, res.reason)
          break
        } catch (err) {
          if (this.d.signal.aborted || !this.d.holdsLease()) {
            this.d.log.error({ node: replica.node, block, err: String(err) }, 'could not mark a syncing replica stale after a failed trailing write; the lease is gone, so the next holder copies the block again')
            break
          }
          this.d.log.warn({ node: replica.node, block, attempt, err: String(err) }, 'could not mark a syncing replica stale yet: retrying (its block is held meanwhile)')
          await sleep(Math.min(IO_RETRY_PAUSE_MS * 2 ** attempt, 5_000)).catch(safetyCatch)
        }
      }
    }
  }
}
