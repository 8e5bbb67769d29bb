// Reads one disk as it was at a committed epoch — a snapshot, or the parent of a clone — from
// the nearest in-sync replica with failover, like head reads. Committed versions never change,
// so only the placement (relocation moves replicas) is kept current, through watches.
import { UkaiError, safetyCatch } from '../errors'
import { DiskMap } from '../meta/disk-map'
import { ReplicaSet, readableReplicas } from '../meta/placement'
import { DiskRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { blockCountFor } from './block-range'
import { cachedCommittedRead } from './cached-epoch-read'
import { NodePool } from './node-pool'
import { readFromReplicas } from './replica-read'
import { nearestFirst } from '../meta/placement-policy'
import { Lifecycle } from '../lib/lifecycle'

export class EpochReader {
  readonly record: DiskRecord
  readonly epoch: number
  readonly blocks: number       // blocks that existed at the epoch; later ones read as absent
  readonly sizeBytes: number
  // The placement (relocation moves replicas), kept current by the map's watches.
  private map!: DiskMap
  private turn = 0
  private readonly life = new Lifecycle({ release: async () => { await this.map.close() } })

  private constructor (private readonly pool: NodePool, record: DiskRecord, epoch: number, sizeBytes: number, private readonly ioRetryMs: number) {
    this.record = record
    this.epoch = epoch
    this.blocks = blockCountFor(sizeBytes, record.blockSizeBytes)
    this.sizeBytes = sizeBytes
  }

  static async open (meta: MetaStore, pool: NodePool, record: DiskRecord, epoch: number, sizeBytes: number, ioRetryMs: number): Promise<EpochReader> {
    const r = new EpochReader(pool, record, epoch, sizeBytes, ioRetryMs)
    r.map = await DiskMap.open(meta, record)
    return r
  }

  replicasOf (block: number): ReplicaSet { return this.map.replicasOf(block) }

  // The block's bytes at the epoch, or null when this disk has no version of it (a clone's
  // unwritten block: its parent has the bytes).
  async readBlock (block: number, offsetInBlock: number, length: number, absentAsNull: boolean): Promise<Buffer | null> {
    if (block >= this.blocks) return absentAsNull ? null : Buffer.alloc(length)
    const cache = this.pool.committedCache
    if (cache !== undefined) return await cachedCommittedRead(cache, this, block, offsetInBlock, length, absentAsNull)
    return await this.readFromNodes(block, this.epoch, offsetInBlock, length, absentAsNull)
  }

  // The nearest in-sync replica's answer for (block, epoch); null for an absent block when asked.
  async readFromNodes (block: number, epoch: number, offsetInBlock: number, length: number, absentAsNull: boolean): Promise<Buffer | null> {
    return await readFromReplicas({
      pool: this.pool,
      candidates: () => nearestFirst(this.pool, readableReplicas(this.replicasOf(block)), this.turn++),
      diskUuid: this.record.uuid,
      block,
      epoch,
      offset: offsetInBlock,
      length,
      absentAsNull,
      ioRetryMs: this.ioRetryMs,
      what: `block ${block} of ${this.record.name} at epoch ${this.epoch}`,
      // A rotten committed version: the replica's block is stale (repair copies every version).
      onCorrupt: async (nodes) => {
        for (const node of nodes) await this.map.markStale(node, [block]).catch(safetyCatch)
      }
    })
  }

  // The epochs of the block's versions, from the nearest in-sync replica that answers.
  async versionsOf (block: number): Promise<number[]> {
    const errors: string[] = []
    for (const r of nearestFirst(this.pool, readableReplicas(this.replicasOf(block)), this.turn++)) {
      try {
        return (await this.pool.readClient(r.node).blockInfo({ diskUuid: this.record.uuid, block })).map(v => v.epoch)
      } catch (err) {
        errors.push(`${r.node}: ${(err as Error).message}`)
      }
    }
    throw UkaiError.io(`block ${block} of ${this.record.name}: no in-sync replica listed its versions (${errors.join('; ') || 'none in sync'})`)
  }

  close (): Promise<void> { return this.life.close() }
}
