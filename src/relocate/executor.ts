// Runs a relocation on the host that holds the disk's lease (DESIGN.md "Relocation"):
//   1. add the target replicas as `syncing` — from then on every write goes to them too;
//   2. copy each written block's versions to the targets, under the block's copy lock, and mark
//      them `in-sync` in batches (unwritten blocks are marked without copying: thin stays thin);
//   3. flip the map in one transaction to the targets alone — only once every block is in sync
//      there, so the last in-sync replica of a block is never dropped;
//   4. delete the data on the dropped nodes, after the flip is committed (after-flip.ts).
// Plan and progress live in ZooKeeper; a crash anywhere leaves a consistent map, and whoever
// holds the lease next runs the same steps again (each is idempotent).
//
// The executor takes the narrow pieces of a disk it needs (RelocatableDisk: the placement map,
// the block copy locks, the epoch copies carry), never the disk engine: the lease holder passes
// its open disk, an orphaned relocation a map of its own under a fencing epoch (run-here.ts).
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { PlacementMap } from '../meta/disk-map'
import { nearestSources } from '../meta/placement-policy'
import { Replica, ReplicaSet } from '../meta/placement'
import { RelocationRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'
import { CopyLocks } from '../lib/block-locks'
import { sleep } from '../lib/timers'
import { forEachBounded } from '../lib/worker-pool'
import { CopyPace, resumedPace } from './copy-pace'
import { PullPaths, pathCost } from './pull-paths'
import { adoptPlacement, dropFarData } from './after-flip'

export const COPY_CONCURRENCY_DEFAULT = 4
// A node counts as unreachable only after this long: one that just restarted is reached again
// once the client's reconnect back-off ends.
const UNREACHABLE_AFTER_MS = 5000

async function patiently<T> (call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + UNREACHABLE_AFTER_MS
  for (;;) {
    try {
      return await call()
    } catch (err) {
      if (Date.now() >= deadline) throw err
      await sleep(500)
    }
  }
}
// A block's copy that failed for a transient reason (UNAVAILABLE: a cancelled or timed-out pull,
// a node briefly found hung, a broken stream) is tried again this many times in all, after a
// back-off doubling from PULL_RETRY_FIRST_MS (1 + 2 + 4 s), before the relocation pauses. At
// load 43-65 the migration bench paused 3 of 4 NBD relocations on one cancelled pull
// (docs/performance.md); a target that stays unreachable still pauses at once (targetDown).
const PULL_ATTEMPTS_MAX = 4
const PULL_RETRY_FIRST_MS = 1000
const PROGRESS_INTERVAL_MS = 1000
const IN_SYNC_BATCH_BLOCKS = 64

export type RelocationOutcome = 'done' | 'paused' | 'cancelled' | 'stopped'

// What a relocation needs of the disk it moves. The disk engine (an open VirtualDisk holding
// the lease) has all of it; so has an orphaned relocation's own map (run-here.ts).
export interface RelocatableDisk {
  readonly name: string
  readonly record: { readonly uuid: string }
  // Where each block lives; changed only through its conditional update.
  readonly map: PlacementMap
  // A copy of a block runs with no write of it in flight in this process, and holds new ones back.
  readonly blockLocks: CopyLocks
  // The epoch copies carry (the nodes refuse it once a newer one fenced them); null: this
  // process may not run the relocation (the lease moved).
  readonly leaseEpoch: number | null
  // Runs without the write lease, under a fencing epoch: gives way to a run under the lease.
  readonly leaseFree?: boolean
  // Makes this process's writes durable on every replica, syncing ones too (a guest's flush
  // does not wait for those): run before replicas are marked in sync. Absent: nothing written here.
  flushEverywhere?: () => Promise<void>
}

export interface ExecutorDeps {
  meta: MetaStore
  pool: NodePool
  disk: RelocatableDisk
  host: string
  concurrency?: number
  logger?: Logger
}

class Stop extends Error {
  constructor (readonly outcome: RelocationOutcome, readonly reason: string) { super(reason) }
}

// Every pull of a block to a target failed, each for a transient reason: worth another attempt.
class TransientCopyFailure extends Error {}

export class RelocationExecutor {
  private readonly meta: MetaStore
  private readonly pool: NodePool
  private readonly disk: RelocatableDisk
  private readonly host: string
  private readonly concurrency: number
  private readonly log: Logger
  private rec!: RelocationRecord
  private version = -1
  private claimed = false // our first save named us the executor
  private lastSaveMs = 0
  private copiedBytes = 0
  private copiedBlocks = 0
  // The copy's rate limiter: the record's rate, slowed while the guests wait on a node (copy-pace.ts).
  private pace: CopyPace | null = null
  private bytesPerBlock = 0 // the plan's estimate per block to copy (all its targets)
  private readonly paths: PullPaths

  constructor (deps: ExecutorDeps) {
    this.meta = deps.meta
    this.pool = deps.pool
    this.disk = deps.disk
    this.host = deps.host
    this.concurrency = deps.concurrency ?? COPY_CONCURRENCY_DEFAULT
    this.log = (deps.logger ?? silentLogger).child({ disk: deps.disk.name, component: 'relocation' })
    this.paths = new PullPaths((source, target) => pathCost(this.pool.get(source), this.pool.get(target)))
  }

  async run (signal?: AbortSignal): Promise<RelocationOutcome> {
    const got = await this.meta.getRelocation(this.disk.name)
    if (got === null) return 'stopped'
    const { version, ...rec } = got
    this.rec = rec
    this.version = version
    if (rec.state === 'done') return 'done'
    try {
      if (rec.state === 'cancelled') { await this.rollBack(); return 'cancelled' }
      // A run that resumes a copy starts at the pace the run before it had learned (copy-pace.ts).
      const resumed = resumedPace(rec.pace, rec.rateBytesPerSec)
      if (rec.progress.bytes > 0 || rec.pace !== undefined) this.log.info({ pace: resumed.pace?.bytesPerSec ?? null }, `copy resumed: ${resumed.note}`)
      this.pace = new CopyPace({
        source: this.meta,
        ceilingBytesPerSec: rec.rateBytesPerSec,
        resumed: resumed.pace,
        nodes: () => [...new Set([...this.disk.map.nodesInMap(), ...this.rec.targetNodes])],
        log: this.log,
        // Shown at once (`relocate status`), not only when the next block is done.
        onChange: () => { this.progress(true).catch(safetyCatch) }
      })
      await this.save({ state: 'copying', executor: this.host, reason: '', pace: this.pace.current ?? undefined })
      this.claimed = true
      this.copiedBytes = rec.progress.bytes
      this.copiedBlocks = rec.progress.blocks
      this.bytesPerBlock = rec.plan.writtenBlocks > 0 ? rec.plan.bytes / rec.plan.writtenBlocks : 0
      const lease = this.disk.leaseEpoch
      if (lease === null) throw new Stop('stopped', 'this host does not hold the lease')
      this.log.info({ targets: rec.targetNodes, drop: rec.dropNodes }, 'relocation running')

      await this.addTargets()
      // Blocks can fall out of sync again while we copy (a target missed a write): loop.
      for (let round = 0; ; round++) {
        const pending = this.blocksNeedingTargets()
        if (pending.length === 0) break
        if (round > 3) throw new Stop('paused', `blocks keep falling out of sync on the targets (${pending.length} left)`)
        // A target marked stale since (a write or a flush it failed) must be syncing again to be
        // copied to: copyOnce pulls only to syncing targets, so without this every later round
        // found the same blocks and the run paused (CI, session 9: "18 left" under a guest writer).
        if (round > 0) await this.addTargets()
        await this.copyBlocks(pending, signal)
      }
      await this.save({ state: 'flipping' })
      // A syncing replica's flush a guest's flush sent and did not wait for (dirty-flush.ts) is
      // waited for before the sources are dropped.
      await this.disk.flushEverywhere?.()
      await this.flip()
      const orphaned = await dropFarData({ pool: this.pool, disk: this.disk, nodes: this.rec.dropNodes, log: this.log })
      if (orphaned.length > 0) this.rec.reason = `orphaned data on ${orphaned.join(', ')} (node unreachable at the drop)`
      // The map is flipped already: a policy that could not be written is worth a warning, not a pause.
      await adoptPlacement(this.meta, this.disk.name, this.rec.placement, this.log).catch((err) => {
        if (!isUkaiError(err)) throw err
        this.log.warn({ err: err.message, placement: this.rec.placement }, 'could not record the disk\'s new placement policy')
      })
      // Done: the plan becomes what was really copied, so every display ends at "N of N".
      await this.save({
        state: 'done', executor: '', finishedAtMs: Date.now(), pace: undefined,
        plan: { ...this.rec.plan, writtenBlocks: this.copiedBlocks, bytes: this.copiedBytes },
        progress: { blocks: this.copiedBlocks, bytes: this.copiedBytes, updatedAtMs: Date.now() }
      })
      this.log.info({ bytes: this.copiedBytes }, 'relocation done')
      return 'done'
    } catch (caught) {
      // A newer lease epoch was taken while this run changed the map under a fencing epoch
      // (disk-map.ts): the new holder runs it now.
      const err = isUkaiError(caught, 'FENCED') ? new Stop('stopped', `fenced: ${(caught as Error).message}`) : caught
      if (err instanceof Stop) {
        if (err.outcome === 'cancelled') { await this.rollBack(); return 'cancelled' }
        if (err.outcome === 'paused') {
          this.log.warn({ reason: err.reason }, 'relocation paused')
          await this.save({ state: 'paused', executor: '', reason: err.reason }).catch(() => {})
        } else {
          await this.save({ executor: '' }).catch(() => {})
        }
        return err.outcome
      }
      this.log.error({ err: String(err) }, 'relocation failed; pausing')
      await this.save({ state: 'paused', executor: '', reason: (err as Error).message }).catch(() => {})
      return 'paused'
    }
  }

  // Conditional update of the record; a concurrent cancel shows up here as a conflict.
  private async save (patch: Partial<RelocationRecord>): Promise<void> {
    const next = { ...this.rec, ...patch }
    try {
      this.version = await this.meta.updateRelocation(next, this.version)
      this.rec = next
    } catch (err) {
      if (!isUkaiError(err, 'ZK_CONFLICT')) throw err
      const fresh = await this.meta.getRelocation(this.disk.name)
      if (fresh === null) throw new Stop('stopped', 'the relocation record was removed')
      const { version, ...rec } = fresh
      // Once we ran it, a record naming another executor means the lease moved and that host
      // took over: write nothing more (not even "executor: ''"), or we would hide its run.
      if (this.claimed && rec.executor !== '' && rec.executor !== this.host) throw new Stop('stopped', `${rec.executor} runs it now`)
      this.rec = rec
      this.version = version
      if (rec.state === 'cancelled') throw new Stop('cancelled', 'cancelled')
      await this.save(patch)
    }
  }

  private async progress (force = false): Promise<void> {
    const now = Date.now()
    if (!force && now - this.lastSaveMs < PROGRESS_INTERVAL_MS) return
    this.lastSaveMs = now
    await this.save({ progress: { blocks: this.copiedBlocks, bytes: this.copiedBytes, updatedAtMs: now }, pace: this.pace?.current ?? undefined })
  }

  private async addTargets (): Promise<void> {
    const targets = this.rec.targetNodes
    const n = await this.disk.map.update(null, (set) => {
      let next: Replica[] = set.slice()
      for (const t of targets) {
        const cur = next.find(r => r.node === t)
        if (cur === undefined) next.push({ node: t, state: 'syncing' })
        else if (cur.state === 'stale') next = next.map(r => r.node === t ? { node: t, state: 'syncing' } : r)
      }
      return next
    })
    this.log.info({ blocks: n }, 'targets added as syncing')
  }

  private blocksNeedingTargets (): number[] {
    const out: number[] = []
    const total = this.disk.map.blockCount()
    for (let b = 0; b < total; b++) {
      const set = this.disk.map.replicasOf(b)
      if (this.rec.targetNodes.some(t => set.find(r => r.node === t)?.state !== 'in-sync')) out.push(b)
    }
    return out
  }

  // Blocks some node of the map has data for; the rest need no copy. Targets are asked too: a
  // target may be the only in-sync holder of a block another target lacks (a repair, or a move
  // that keeps a node whose partner missed writes while it was down).
  private async writtenBlocks (): Promise<Set<number>> {
    const written = new Set<number>()
    for (const node of this.disk.map.nodesInMap()) {
      // A node known to be down (or removed) that holds no block's only in-sync copy is not
      // asked at all: its replicas are what a re-replication replaces, and waiting for it to
      // answer would cost every round the whole reconnect back-off.
      const view = this.pool.get(node)
      if ((view === undefined || view.alive === null) && this.blockWithOnlyInSync(node) === null) {
        this.log.info({ node }, 'node is down; every block it holds in sync has another in-sync replica: copying from those')
        continue
      }
      try {
        for (const b of await patiently(async () => await this.pool.client(node).listBlocks({ diskUuid: this.disk.record.uuid }))) written.add(b.block)
      } catch (err) {
        // A source that cannot answer may hold blocks nobody else has: do not guess — unless it
        // is the only in-sync replica of no block (a dead node a repair replaces): every block it
        // holds in sync is then listed by another in-sync replica too.
        const onlyCopy = this.blockWithOnlyInSync(node)
        if (onlyCopy !== null) throw new Stop('paused', `source node ${node} cannot list the disk's blocks (and is the only in-sync replica of block ${onlyCopy}): ${(err as Error).message}`)
        this.log.warn({ node, err: (err as Error).message }, 'node cannot list the disk\'s blocks; every block it holds in sync has another in-sync replica: going on without it')
      }
    }
    return written
  }

  private blockWithOnlyInSync (node: string): number | null {
    for (let b = 0; b < this.disk.map.blockCount(); b++) {
      const inSync = this.disk.map.replicasOf(b).filter(r => r.state === 'in-sync')
      if (inSync.length === 1 && inSync[0].node === node) return b
    }
    return null
  }

  private async copyBlocks (pending: number[], signal?: AbortSignal): Promise<void> {
    const written = await this.writtenBlocks()
    const inSyncBatch: number[] = []
    const flushBatch = async (): Promise<void> => {
      const blocks = inSyncBatch.splice(0)
      if (blocks.length === 0) return
      // Writes since each block's copy reached the targets, durable there before they count as in sync.
      await this.disk.flushEverywhere?.()
      // Under the blocks' copy locks: a write acknowledged before a syncing replica answered
      // holds its block's write lock until it did (trailing writes, vdisk/data-path.ts), so
      // none is still on its way to a target marked in sync here, and a write that starts after
      // waits for the target like for any in-sync replica.
      await this.disk.blockLocks.withCopies(blocks, async () => await this.disk.map.update(blocks, set => this.withTargetsInSync(set)))
    }
    const empty = pending.filter(b => !written.has(b))
    inSyncBatch.push(...empty)
    await flushBatch()
    const queue = pending.filter(b => written.has(b))
    // The plan counted every written block for every target; a repair copies only the stale
    // ones, a second round only those that fell out of sync: from now on the plan is what is
    // left to copy plus what was copied (relocate/progress.ts reads percent from it).
    await this.save({ plan: { ...this.rec.plan, writtenBlocks: this.copiedBlocks + queue.length, bytes: Math.round(this.copiedBytes + queue.length * this.bytesPerBlock) } })
    const stopIfAborted = (): void => { if (signal?.aborted === true) throw new Stop('stopped', 'the lease moved') }
    let failure: unknown = null
    this.pace?.start()
    const abortPace = (): void => { this.pace?.abort(new Stop('stopped', 'the lease moved')) }
    signal?.addEventListener('abort', abortPace, { once: true })
    try {
      await forEachBounded(queue, this.concurrency, async (block) => {
        stopIfAborted()
        const bytes = await this.copyOne(block)
        inSyncBatch.push(block)
        if (inSyncBatch.length >= IN_SYNC_BATCH_BLOCKS) await flushBatch()
        await this.progress()
        await this.pace?.copied(bytes)
      })
      stopIfAborted()  // as before: an abort seen when the last copy ends (or with nothing to copy) stops the run
    } catch (err) {
      failure = err
    } finally {
      signal?.removeEventListener('abort', abortPace)
      await this.pace?.stop()
    }
    await flushBatch()
    await this.progress(true)
    if (failure !== null) throw failure
  }

  private withTargetsInSync (set: ReplicaSet): ReplicaSet {
    return set.map(r => this.rec.targetNodes.includes(r.node) && r.state === 'syncing' ? { node: r.node, state: 'in-sync' as const } : r)
  }

  // Returns the bytes copied (every target's). A transient failure is retried with back-off,
  // outside the block's copy lock (the guest's writes of the block wait only for an attempt).
  private async copyOne (block: number): Promise<number> {
    const lease = this.disk.leaseEpoch
    if (lease === null) throw new Stop('stopped', 'the lease moved')
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.copyOnce(block, lease)
      } catch (err) {
        if (!(err instanceof TransientCopyFailure)) throw err
        if (attempt >= PULL_ATTEMPTS_MAX) {
          throw new Stop('paused', `${err.message} (${attempt} attempts, each failing for a transient reason: the node may be overloaded or the link flapping; run \`ukai relocate\` again to resume)`)
        }
        const waitMs = PULL_RETRY_FIRST_MS * 2 ** (attempt - 1)
        this.log.warn({ block, attempt, attemptsMax: PULL_ATTEMPTS_MAX, waitMs, err: err.message }, 'block copy failed for a transient reason: retrying')
        await sleep(waitMs)
        if (this.disk.leaseEpoch !== lease) throw new Stop('stopped', 'the lease moved')
      }
    }
  }

  private async copyOnce (block: number, lease: number): Promise<number> {
    return await this.disk.blockLocks.withCopy(block, async () => {
      const set = this.disk.map.replicasOf(block)
      const targets = this.rec.targetNodes.filter(t => set.find(r => r.node === t)?.state === 'syncing')
      // In-sync non-targets first, then in-sync targets; nearest first (a stable sort, as before).
      const inSync = nearestSources(this.pool, set.filter(r => r.state === 'in-sync' && !this.rec.targetNodes.includes(r.node))
        .concat(set.filter(r => r.state === 'in-sync' && this.rec.targetNodes.includes(r.node))))
      // A dead source is tried only when no live one is left (the surviving replica of a node
      // that is out is where re-replication copies from).
      const live = inSync.filter(r => this.pool.get(r.node)?.alive != null)
      const sources = live.length > 0 ? live : inSync
      if (sources.length === 0) throw new Stop('paused', `block ${block} has no in-sync replica to copy from`)
      // All targets at once (the copy lock holds writes to this block back meanwhile), each
      // starting on the source whose path to it is least busy (pull-paths.ts), the rest after it.
      // Every pull ends before the lock is let go (a failed one must not leave another running
      // under guest writes); the gravest failure wins: a stop, a pause, then a transient one.
      const orders = this.paths.orders(targets, sources, r => r.node)
      const results = await Promise.allSettled(targets.map(async (target, i) => await this.pullTo(block, target, orders[i], lease)))
      const failures = results.flatMap(r => r.status === 'rejected' ? [r.reason as unknown] : [])
      const grave = failures.find(e => !(e instanceof TransientCopyFailure)) ?? failures[0]
      if (grave !== undefined) throw grave
      this.copiedBlocks++
      return results.reduce((a, r) => a + (r.status === 'fulfilled' ? r.value : 0), 0)
    })
  }

  private async pullTo (block: number, target: string, sources: Replica[], lease: number): Promise<number> {
    const errors: string[] = []
    let transient = true
    for (const source of sources) {
      try {
        // Node to node: the target pulls from the source at the address the source
        // registered (the target may route it differently with --peer-address).
        const sourceAddress = this.pool.get(source.node)?.alive?.address ?? this.pool.get(source.node)?.address ?? ''
        const bytes = await this.paths.pull(source.node, target, async () =>
          await this.pool.client(target).pullBlock({ diskUuid: this.disk.record.uuid, block, sourceNode: source.node, sourceAddress, leaseEpoch: lease }))
        this.copiedBytes += bytes
        return bytes
      } catch (err) {
        if (isUkaiError(err, 'FENCED')) throw new Stop('stopped', 'fenced: the lease moved')
        errors.push(`${source.node}→${target}: ${(err as Error).message}`)
        if (!isUkaiError(err, 'UNAVAILABLE')) transient = false
        // A target that cannot be written pauses the relocation; a bad source is skipped.
        if (await this.targetDown(target)) throw new Stop('paused', `target node ${target} is unreachable (${(err as Error).message}); redundancy kept on the sources`)
      }
    }
    const why = `block ${block} could not be copied: ${errors.join('; ')}`
    throw transient ? new TransientCopyFailure(why) : new Stop('paused', why)
  }

  private async targetDown (node: string): Promise<boolean> {
    return await patiently(async () => await this.pool.client(node).stat()).then(() => false, () => true)
  }

  private async flip (): Promise<void> {
    const targets = this.rec.targetNodes
    await this.disk.map.update(null, (set, block) => {
      for (const t of targets) {
        if (set.find(r => r.node === t)?.state !== 'in-sync') {
          throw UkaiError.internal(`flip refused: block ${block} is not in sync on ${t}`)
        }
      }
      return targets.map(node => ({ node, state: 'in-sync' as const }))
    })
    this.log.info({ targets }, 'map flipped to the targets')
  }

  // Cancel: take back the replicas this relocation added; the original ones were never touched.
  private async rollBack (): Promise<void> {
    const added = this.rec.addedNodes
    // …unless an added replica is a block's only in-sync one (the originals failed meanwhile).
    await this.disk.map.update(null, (set) => {
      const kept = set.filter(r => !added.includes(r.node))
      return kept.some(r => r.state === 'in-sync') ? kept : set
    })
    for (const node of added) {
      if (this.disk.map.nodesInMap().has(node)) continue
      await this.pool.client(node).deleteDisk({ diskUuid: this.disk.record.uuid, leaseEpoch: this.disk.leaseEpoch ?? 0 }).catch(() => {})
    }
    await this.save({ state: 'cancelled', executor: '', finishedAtMs: Date.now() }).catch(() => {})
    this.log.info('relocation cancelled and rolled back')
  }
}
