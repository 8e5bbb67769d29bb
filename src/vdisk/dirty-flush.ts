// The blocks a disk wrote per node since their last flush, and the flush that makes them
// durable (the nodes' fsync) or fails: the durability half of the disk engine
// (virtual-disk.ts), kept apart because its rules are the ones a guest's fsync relies on:
// - flush() returns only when every block written since the last flush is durable on a replica
//   that stays in sync; else it fails (EIO) and the blocks stay dirty, so a later flush does not
//   claim what this one could not;
// - a node that fails is marked stale for blocks durable elsewhere; a FENCED answer means the
//   lease moved, and nothing written under the old epoch can be vouched for;
// - calls while a flush runs share the next one (group commit).
// - a flush answered under another node incarnation (its host's boot id) than the writes were
//   acknowledged under (the host crashed and lost them with the page cache; the new process's
//   fsync has nothing to sync) is a failed flush of them on that node (checkIncarnation).
// - the same flush runs in the background shortly after writes (flush-behind.ts), so a guest's
//   fsync, and a live migration's stop, mostly find nothing left to do;
// - a node whose dirty blocks are all replicas still `syncing` there (a relocation's or repair's
//   target; each of those blocks also dirty on an in-sync node the flush waits for) is sent its
//   flush but not waited for: those replicas are not in sync, so the guest's durability does not
//   rest on them, and they become durable before they are marked in sync — by the copy itself
//   (block-pull.ts syncs it) or, for writes after the copy, by flushEverywhere(), which the
//   executor runs before each in-sync batch and the flip, and hand-over and close run too; a
//   syncing replica whose flush fails is marked stale (flushTrailing says why), never vouched for.
//   Measured (bench/migration.ts, 2026-12-07, load 16): the stop-time flush waited 171-356 ms
//   for the two targets across the WAN (busy receiving the copy) against 13-24 ms for the sources.
//
// Every flush is logged ('flush done': why, blocks, replicas, each node's time; debug, info when
// slow): the stop-time flush of a live migration is read from it (bench/migration.ts).
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger } from '../log'
import { DiskMap } from '../meta/disk-map'
import { sleep } from '../lib/timers'
import { NodePool } from './node-pool'
import { IO_RETRY_PAUSE_MS } from './replica-read'
import { FlushBehind } from './flush-behind'

// A flush slower than this is logged at info (every flush at debug).
const FLUSH_SLOW_LOG_MS = 100

// What the flusher counts for the agent's metrics (DiskIoCounters' fields of the same names).
export interface FlushCounters { dirtyBlocks?: number, behindFlushes?: number }

export interface DirtyFlushDeps {
  diskName: string
  diskUuid: string
  map: DiskMap
  pool: NodePool
  // How long a flush waits for a restarting node that holds the only dirty copy of a block.
  ioRetryMs: number
  // Aborted: flushes fail with its reason (the disk was destroyed).
  signal: AbortSignal
  log: Logger
  // The lease epoch held now (null: none); a flush without one uses the epoch of the writes.
  heldEpoch: () => number | null
  // A node refused the flush as FENCED under `leaseEpoch`: the lease moved to another host.
  onFenced: (leaseEpoch: number) => void
  // Flush-behind's idle delay (flush-behind.ts); 0 or absent: off.
  flushBehindMs?: number
  counters?: FlushCounters
}

type FlushCause = 'guest' | 'behind' | 'everywhere'

export class DirtyFlusher {
  // Blocks written per node since its last flush: what a failed flush puts at risk, and the
  // newest lease epoch they were written under (what a flush without the lease must use).
  private dirty = new Map<string, Set<number>>()
  private dirtyLeaseEpoch = 0
  // Per node, the incarnations (node process ids: io-handler.ts) that acknowledged its dirty
  // blocks; normally one. A flush answered by another cannot vouch for them (checkIncarnation).
  private acked = new Map<string, Set<string>>()
  // Group commit: one flush runs at a time; calls meanwhile share the one after it.
  private flushRunning: Promise<void> | null = null
  private flushNext: Promise<void> | null = null
  // Block replicas in `dirty`, and in the flush running now (for the dirtyBlocks gauge).
  private dirtyCount = 0
  private flushingCount = 0
  private trailingCount = 0
  private lastReplicas = 0  // block replicas the last flush took (flush-behind's budget)
  // Flushes sent to syncing replicas and not waited for, and how many of them failed so far
  // (their blocks went back into the dirty set).
  private readonly trailing = new Set<Promise<void>>()
  private trailingFailures = 0
  // The next flush waits for every node, syncing replicas too (flushEverywhere).
  private wantEverywhere = false
  private readonly behind: FlushBehind
  private readonly counters: FlushCounters

  constructor (private readonly d: DirtyFlushDeps) {
    this.counters = d.counters ?? {}
    this.behind = new FlushBehind({
      idleMs: d.flushBehindMs ?? 0,
      signal: d.signal,
      hasDirty: () => this.dirty.size > 0,
      flush: () => this.flushAs('behind'),
      onDone: () => { this.counters.behindFlushes = (this.counters.behindFlushes ?? 0) + 1 },
      lastReplicas: () => this.lastReplicas,
      onFailed: (err) => {
        if (!d.signal.aborted) d.log.warn({ err: String(err) }, 'background flush failed: dirty blocks wait for the next fsync')
        safetyCatch(err)
      }
    })
  }

  // `incarnation`: the node process's that acknowledged the write ('' from a node predating them).
  note (node: string, block: number, leaseEpoch: number, incarnation = ''): void {
    let set = this.dirty.get(node)
    if (set === undefined) { set = new Set(); this.dirty.set(node, set) }
    if (!set.has(block)) { set.add(block); this.dirtyCount++; this.count() }
    if (incarnation !== '') addAll(this.acked, node, [incarnation])
    if (leaseEpoch > this.dirtyLeaseEpoch) this.dirtyLeaseEpoch = leaseEpoch
    this.behind.written()
  }

  private count (): void { this.counters.dirtyBlocks = this.dirtyCount + this.flushingCount + this.trailingCount }

  // Every write made durable on every node it went to, syncing replicas too (they are about to
  // be marked in sync, or the disk is let go), or fails.
  async flushEverywhere (): Promise<void> {
    const failures = this.trailingFailures
    this.wantEverywhere = true
    await this.flushAs('everywhere')
    await Promise.all([...this.trailing])
    if (this.trailingFailures === failures) return
    // A syncing replica's flush failed meanwhile (also one that ended while ours ran, too late
    // for it to see the blocks): they are dirty again; wait for them now.
    this.wantEverywhere = true
    await this.flushAs('everywhere')
  }

  // Makes every acknowledged write durable on the nodes (their fsync), or fails. Without the
  // lease (lost, handed over) it still flushes, under the epoch the writes were made with: a node
  // accepts that only while nobody newer fenced it, and then its fsync covers our writes; once
  // another holder fenced it, nothing can vouch for them and the flush fails (EIO), never
  // reports success. Calls while one runs share the next one (group commit): each returns after
  // a flush that started after it was called.
  flush (): Promise<void> { return this.flushAs('guest') }

  // A background flush is the same flush: a guest's fsync during it shares the next one.
  private flushAs (cause: FlushCause): Promise<void> {
    if (this.d.signal.aborted) return Promise.reject(this.d.signal.reason)
    if (this.flushRunning === null) return this.startFlush(cause)
    if (this.flushNext === null) {
      const after = (): Promise<void> => { this.flushNext = null; return this.startFlush(cause) }
      this.flushNext = this.flushRunning.then(after, after)
    }
    return this.flushNext
  }

  private startFlush (cause: FlushCause): Promise<void> {
    const run = this.flushOnce(cause).finally(() => { if (this.flushRunning === run) this.flushRunning = null })
    this.flushRunning = run
    return run
  }

  private async flushOnce (cause: FlushCause): Promise<void> {
    const everywhere = this.wantEverywhere
    this.wantEverywhere = false
    if (this.dirty.size === 0) {
      if (cause === 'guest') this.d.log.debug({ cause, blocks: 0, replicas: 0, nodeMs: {}, tookMs: 0, ok: true }, 'flush done')
      return
    }
    const leaseEpoch = this.d.heldEpoch() ?? this.dirtyLeaseEpoch
    const placed = this.dirtyStillPlaced(this.dirty)
    const { dirty, trailing } = everywhere ? { dirty: placed, trailing: new Map<string, Set<number>>() } : this.splitSyncing(placed)
    const acked = this.acked
    this.dirty = new Map()
    this.acked = new Map()
    this.behind.taken()
    this.flushingCount = this.dirtyCount
    this.lastReplicas = this.dirtyCount
    this.dirtyCount = 0
    this.count()
    const t0 = Date.now()
    for (const [node, blocks] of trailing) this.flushTrailing(node, blocks, leaseEpoch, acked)
    const nodeMs: Record<string, number> = {}
    let failed: unknown = null
    try {
      await this.flushNodes(dirty, acked, leaseEpoch, nodeMs)
      this.behind.succeeded()
    } catch (err) {
      failed = err
      // Not durable: keep every block dirty, so the next flush tries again (and fails again).
      this.restore(dirty, leaseEpoch, acked)
      throw err
    } finally {
      this.flushingCount = 0
      this.count()
      // What a flush waited for: the stop-time flush of a live migration is most of its downtime.
      const tookMs = Date.now() - t0
      const blocks = new Set([...dirty.values()].flatMap(s => [...s])).size
      const fields = { cause, blocks, replicas: [...dirty.values()].reduce((n, s) => n + s.size, 0), nodeMs, notWaitedFor: [...trailing.keys()], tookMs, ok: failed === null }
      if (tookMs >= FLUSH_SLOW_LOG_MS) this.d.log.info(fields, 'flush done')
      else this.d.log.debug(fields, 'flush done')
    }
  }

  // Blocks back into the dirty set after a failed flush (not through note(): a failed flush does
  // not arm flush-behind again; the next write or fsync does).
  // `acked` goes back with them: a later flush by another incarnation must not vouch for them.
  private restore (blocksOf: Map<string, Set<number>>, leaseEpoch: number, acked: Map<string, Set<string>>): void {
    for (const [node, blocks] of blocksOf) {
      addAll(this.acked, node, acked.get(node) ?? [])
      let set = this.dirty.get(node)
      if (set === undefined) { set = new Set(); this.dirty.set(node, set) }
      for (const b of blocks) if (!set.has(b)) { set.add(b); this.dirtyCount++ }
    }
    if (leaseEpoch > this.dirtyLeaseEpoch) this.dirtyLeaseEpoch = leaseEpoch
    this.behind.restored()
    this.count()
  }

  // Splits off the nodes not waited for (see the header): every dirty block of theirs is a
  // syncing replica there, and dirty on a node the flush waits for whose replica is in sync.
  private splitSyncing (placed: Map<string, Set<number>>): { dirty: Map<string, Set<number>>, trailing: Map<string, Set<number>> } {
    const stateOn = (node: string, b: number): string | undefined => this.d.map.replicasOf(b).find(r => r.node === node)?.state
    const syncingOnly = (node: string): boolean => [...(placed.get(node) as Set<number>)].every(b => stateOn(node, b) === 'syncing')
    const trailingNodes = new Set([...placed.keys()].filter(syncingOnly))
    const covered = (b: number): boolean => [...placed].some(([n, blocks]) => !trailingNodes.has(n) && blocks.has(b) && stateOn(n, b) === 'in-sync')
    for (const node of trailingNodes) if (![...(placed.get(node) as Set<number>)].every(covered)) trailingNodes.delete(node)
    const dirty = new Map([...placed].filter(([n]) => !trailingNodes.has(n)))
    const trailing = new Map([...placed].filter(([n]) => trailingNodes.has(n)))
    return { dirty, trailing }
  }

  // A syncing replica's flush, not waited for: durable, or the replica is marked stale for its
  // blocks (the copy sends them again). Not "dirty again, for the next flush": the relocation
  // may have marked the replica in sync meanwhile, and a node that lost its page cache (a host
  // crash) answers the next fsync with success — the write it lost would then be vouched for,
  // and the flip would drop the sources that still hold it. Blocks it is the only in-sync
  // replica of (their in-sync holder failed since), a FENCED answer (the lease moved: the
  // guest's path reports it) or a map that cannot be changed stay dirty instead, and the next
  // flush, which waits for them, decides.
  private flushTrailing (node: string, blocks: Set<number>, leaseEpoch: number, acked: Map<string, Set<string>>): void {
    this.trailingCount += blocks.size
    const flushed = this.d.pool.client(node).flush({ diskUuid: this.d.diskUuid, leaseEpoch })
    const p: Promise<void> = flushed.then(inc => checkIncarnation(node, acked.get(node), inc)).then(() => {}, async (err) => {
      let left = [...blocks]
      if (!isUkaiError(err, 'FENCED')) {
        left = await this.d.map.markStaleWhereCovered(node, left).catch(() => left)
      }
      this.d.log.warn({ node, err: String(err), markedStale: blocks.size - left.length, stillDirty: left.length }, 'flush of a syncing replica failed')
      if (left.length > 0) {
        this.restore(new Map([[node, new Set(left)]]), leaseEpoch, acked)
        this.trailingFailures++
      }
    }).finally(() => {
      this.trailing.delete(p)
      this.trailingCount -= blocks.size
      this.count()
    })
    this.trailing.add(p)
  }

  // A node that no longer holds a block (a drain, a relocation or a re-replication moved it
  // while the write was unflushed) owes nothing for it: the block reached its new replicas by a
  // durable copy, and writes since went to them too (dirty there). Flushing the old node would
  // fail once it is removed, and fail the guest's fsync with it.
  private dirtyStillPlaced (dirty: Map<string, Set<number>>): Map<string, Set<number>> {
    const out = new Map<string, Set<number>>()
    for (const [node, blocks] of dirty) {
      const kept = new Set([...blocks].filter(b => this.d.map.replicasOf(b).some(r => r.node === node)))
      if (kept.size > 0) out.set(node, kept)
    }
    return out
  }

  // fsync on every node in `dirty`. A node that fails is marked stale for its blocks when each of
  // them is durable on a node that flushed; a block durable nowhere yet waits (a restarting
  // node; up to --io-retry-ms) and otherwise fails the flush. A hung node fails within the
  // hung bound, not the call deadline.
  // `nodeMs`: each node's flush time, filled in as they answer (the log line's).
  // A node answered by another incarnation than its writes' failed (checkIncarnation).
  private async flushNodes (dirty: Map<string, Set<number>>, acked: Map<string, Set<string>>, leaseEpoch: number, nodeMs: Record<string, number>): Promise<void> {
    const deadline = Date.now() + this.d.ioRetryMs
    const flushed = new Set<string>()
    let pending = [...dirty.keys()]
    for (;;) {
      const failures = new Map<string, unknown>()
      await Promise.all(pending.map(async (node) => {
        const t0 = Date.now()
        try {
          const inc = await this.d.pool.client(node).flush({ diskUuid: this.d.diskUuid, leaseEpoch })
          checkIncarnation(node, acked.get(node), inc)
          nodeMs[node] = Date.now() - t0
          flushed.add(node)
        } catch (err) {
          nodeMs[node] = Date.now() - t0
          this.d.log.warn({ node, err: String(err) }, 'flush failed')
          failures.set(node, err)
        }
      }))
      if (failures.size === 0) return
      const fenced = [...failures].find(([, err]) => isUkaiError(err, 'FENCED'))
      if (fenced !== undefined) {
        this.d.onFenced(leaseEpoch)
        throw UkaiError.fenced(`flush of ${this.d.diskName} refused by ${fenced[0]}: the lease moved to another host (epoch ${leaseEpoch} is stale), so writes made under it cannot be vouched for`)
      }
      const orphansOf = (node: string): number[] => [...(dirty.get(node) as Set<number>)].filter(b => ![...flushed].some(n => dirty.get(n)?.has(b)))
      const stuck = [...failures.keys()].filter(n => orphansOf(n).length > 0)
      if (stuck.length === 0) {
        for (const node of failures.keys()) {
          const blocks = [...(dirty.get(node) as Set<number>)]
          if (this.d.pool.isHung(node)) await this.d.map.markHungNodeStale(node, blocks)
          else await this.d.map.markStale(node, blocks)
        }
        return
      }
      const why = stuck.map(n => `${n}: ${(failures.get(n) as Error).message}`).join('; ')
      const retryable = stuck.every(n => isUkaiError(failures.get(n), 'UNAVAILABLE'))
      if (!retryable || Date.now() >= deadline) {
        throw UkaiError.io(`flush of ${this.d.diskName} failed: block ${orphansOf(stuck[0])[0]} is not durable on any replica (${why})`)
      }
      await sleep(IO_RETRY_PAUSE_MS, { signal: this.d.signal })
      pending = [...failures.keys()]
    }
  }
}

function addAll<T> (m: Map<string, Set<T>>, key: string, values: Iterable<T>): void {
  let set = m.get(key)
  if (set === undefined) { set = new Set(); m.set(key, set) }
  for (const v of values) set.add(v)
}

// A flush vouches only for writes acknowledged under the incarnation that answers it (the node's
// host's boot id: src/storagenode/incarnation.ts). Another one (the host crashed and rebooted)
// may have lost them with the page cache, and its fsync succeeds with nothing to sync: that is a
// failed flush of the node's dirty blocks (IO_ERROR, not
// retried: asking again gets the same answer). One string compare per node per flush. '' (a node
// that predates incarnations: docs/operations.md) is not checked.
function checkIncarnation (node: string, acked: Set<string> | undefined, answered: string): void {
  if (answered === '' || acked === undefined) return
  for (const inc of acked) {
    if (inc !== answered) throw UkaiError.io(`${node} rebooted since it acknowledged writes not yet flushed (incarnation ${inc}, flush answered under ${answered}): they may have been lost with its page cache`)
  }
}
