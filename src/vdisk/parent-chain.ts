// A clone's ancestry: its parent disk pinned at the snapshot epoch, that disk's parent, and so
// on. A clone's block with no version of its own reads as the first ancestor that has one
// (zeros when none has); the first write of such a block first copies that ancestor's version
// into the clone (copy-on-write), on the node itself when it holds the ancestor's block.
//
// The copy lands at CLONE_BASE_EPOCH, the clone's first epoch, below every snapshot of the clone:
// those snapshots read through to exactly these bytes anyway, so they see no change.
import { UkaiError, isUkaiError } from '../errors'
import { readableReplicas } from '../meta/placement'
import { DiskRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { NodePool } from './node-pool'
import { EpochReader } from './epoch-reader'
import { nearestFirst } from '../meta/placement-policy'
import { Lifecycle } from '../lib/lifecycle'

export const CLONE_BASE_EPOCH = 1
const CHAIN_DEPTH_MAX = 16

export class ParentChain {
  private constructor (readonly levels: EpochReader[], private readonly pool: NodePool) {}

  // Null for a disk that is no clone.
  static async open (meta: MetaStore, pool: NodePool, record: DiskRecord, ioRetryMs: number): Promise<ParentChain | null> {
    if (record.parent === null) return null
    const levels: EpochReader[] = []
    let parent: DiskRecord['parent'] = record.parent
    while (parent !== null) {
      if (levels.length >= CHAIN_DEPTH_MAX) throw UkaiError.internal(`disk ${record.name}: clone chain deeper than ${CHAIN_DEPTH_MAX}`)
      const snap = await meta.getSnapshot(parent.disk, parent.snapshot)
      const rec = await meta.getDisk(parent.disk)
      levels.push(await EpochReader.open(meta, pool, rec, snap.epoch, snap.sizeBytes, ioRetryMs))
      parent = rec.parent
    }
    return new ParentChain(levels, pool)
  }

  async read (block: number, offsetInBlock: number, length: number): Promise<Buffer> {
    for (let i = 0; i < this.levels.length; i++) {
      const data = await this.levels[i].readBlock(block, offsetInBlock, length, i < this.levels.length - 1 || this.levels[i].record.parent !== null)
      if (data !== null) return data
    }
    return Buffer.alloc(length)
  }

  // Makes `target` (a replica of the clone's block) hold the ancestor's version of the block,
  // unless it holds a version already. Returns the bytes moved over the network (0 when local).
  async materialize (clone: DiskRecord, block: number, target: string, leaseEpoch: number): Promise<number> {
    for (const level of this.levels) {
      if (block >= level.blocks) continue
      const holders = readableReplicas(level.replicasOf(block))
      const local = holders.find(r => r.node === target)
      const sources = local !== undefined ? [local] : nearestFirst(this.pool, holders, 0)
      const errors: Array<{ node: string, message: string, err: unknown }> = []
      let answered = false
      for (const src of sources) {
        const view = this.pool.get(src.node)
        try {
          const res = await this.pool.client(target).copyBase({
            diskUuid: clone.uuid, block, epoch: CLONE_BASE_EPOCH, baseUuid: level.record.uuid, baseEpoch: level.epoch,
            sourceNode: src.node, sourceAddress: view === undefined ? '' : (view.alive?.address ?? view.address), leaseEpoch
          })
          if (res.result !== 'absent') return res.bytes
          answered = true
          break
        } catch (err) {
          errors.push({ node: src.node, message: (err as Error).message, err })
        }
      }
      if (!answered) {
        const why = `copy-on-write of block ${block} of ${clone.name} from ${level.record.name}: no replica of the parent could be copied (${errors.map(e => `${e.node}: ${e.message}`).join('; ') || 'none in sync'})`
        // Nothing reachable (the target restarting, say): UNAVAILABLE, which the write waits on
        // up to --io-retry-ms like any unreachable replica, instead of failing at once.
        if (errors.length > 0 && errors.every(e => isUkaiError(e.err, 'UNAVAILABLE'))) throw UkaiError.unavailable(why)
        throw UkaiError.io(why)
      }
    }
    return 0
  }

  // Blocks some ancestor wrote at or below its pinned epoch: all a flatten has to copy.
  async writtenBlocks (meta: MetaStore): Promise<number[]> {
    const blocks = new Set<number>()
    for (const level of this.levels) {
      const nodes = new Set<string>()
      for (const seg of await meta.loadPlacement(level.record)) for (const run of seg.runs()) for (const r of run.replicas) if (r.state === 'in-sync') nodes.add(r.node)
      for (const node of nodes) {
        for (const b of await this.pool.client(node).listBlocks({ diskUuid: level.record.uuid })) {
          if (b.block < level.blocks && b.epochs.some(e => e <= level.epoch)) blocks.add(b.block)
        }
      }
    }
    return [...blocks].sort((a, b) => a - b)
  }

  private readonly life = new Lifecycle({
    release: async () => { await Promise.all(this.levels.map(async l => { await l.close() })) }
  })

  close (): Promise<void> { return this.life.close() }
}
