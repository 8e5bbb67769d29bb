// The blocks a disk wrote per node since their last flush, and the flush that makes them
// durable (the nodes' fsync) or fails: the durability half of the disk engine
// (virtual-disk.ts), kept apart because its rules are the ones a guest's fsync relies on:
// - flush() returns only when every block written since the last flush is durable on a replica
//   that stays in sync; else it fails (EIO) and the blocks stay dirty, so a later flush does not
//   claim what this one could not;
// - a node that fails is marked stale for blocks durable elsewhere; a FENCED answer means the
//   lease moved, and nothing written under the old epoch can be vouched for;
// - calls while a flush runs share the next one (group commit).
import { UkaiError, isUkaiError } from '../errors'
import { Logger } from '../log'
import { DiskMap } from '../meta/disk-map'
import { sleep } from '../lib/timers'
import { NodePool } from './node-pool'
import { IO_RETRY_PAUSE_MS } from './replica-read'

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
}

export class DirtyFlusher {
  // Blocks written per node since its last flush: what a failed flush puts at risk, and the
  // newest lease epoch they were written under (what a flush without the lease must use).
  private dirty = new Map<string, Set<number>>()
  private dirtyLeaseEpoch = 0
  // Group commit: one flush runs at a time; calls meanwhile share the one after it.
  private flushRunning: Promise<void> | null = null
  private flushNext: Promise<void> | null = null

  constructor (private readonly d: DirtyFlushDeps) {}

  note (node: string, block: number, leaseEpoch: number): void {
    let set = this.dirty.get(node)
    if (set === undefined) { set = new Set(); this.dirty.set(node, set) }
    set.add(block)
    if (leaseEpoch > this.dirtyLeaseEpoch) this.dirtyLeaseEpoch = leaseEpoch
  }

  // Makes every acknowledged write durable on the nodes (their fsync), or fails. Without the
  // lease (lost, handed over) it still flushes, under the epoch the writes were made with: a node
  // accepts that only while nobody newer fenced it, and then its fsync covers our writes; once
  // another holder fenced it, nothing can vouch for them and the flush fails (EIO), never
  // reports success. Calls while one runs share the next one (group commit): each returns after
  // a flush that started after it was called.
  flush (): Promise<void> {
    if (this.d.signal.aborted) return Promise.reject(this.d.signal.reason)
    if (this.flushRunning === null) return this.startFlush()
    if (this.flushNext === null) {
      const after = (): Promise<void> => { this.flushNext = null; return this.startFlush() }
      this.flushNext = this.flushRunning.then(after, after)
    }
    return this.flushNext
  }

  private startFlush (): Promise<void> {
    const run = this.flushOnce().finally(() => { if (this.flushRunning === run) this.flushRunning = null })
    this.flushRunning = run
    return run
  }

  private async flushOnce (): Promise<void> {
    if (this.dirty.size === 0) return
    const leaseEpoch = this.d.heldEpoch() ?? this.dirtyLeaseEpoch
    const dirty = this.dirtyStillPlaced(this.dirty)
    this.dirty = new Map()
    try {
      await this.flushNodes(dirty, leaseEpoch)
    } catch (err) {
      // Not durable: keep every block dirty, so the next flush tries again (and fails again).
      for (const [node, blocks] of dirty) for (const b of blocks) this.note(node, b, leaseEpoch)
      throw err
    }
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
  private async flushNodes (dirty: Map<string, Set<number>>, leaseEpoch: number): Promise<void> {
    const deadline = Date.now() + this.d.ioRetryMs
    const flushed = new Set<string>()
    let pending = [...dirty.keys()]
    for (;;) {
      const failures = new Map<string, unknown>()
      await Promise.all(pending.map(async (node) => {
        try {
          await this.d.pool.client(node).flush({ diskUuid: this.d.diskUuid, leaseEpoch })
          flushed.add(node)
        } catch (err) {
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
