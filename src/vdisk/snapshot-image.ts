// A snapshot as a read-only image: the disk pinned at the snapshot's epoch, falling through to
// the disk's parent chain for a clone's unwritten blocks. What `.snapshots/DISK@NAME` reads.
import { UkaiError } from '../errors'
import { MetaStore } from '../meta/store'
import { SnapshotRecord } from '../meta/schema'
import { splitRange } from './block-range'
import { NodePool } from './node-pool'
import { ParentChain } from './parent-chain'
import { EpochReader } from './epoch-reader'
import { IO_RETRY_MS_DEFAULT } from './virtual-disk'
import { Lifecycle } from '../lib/lifecycle'

export class SnapshotImage {
  private constructor (readonly snapshot: SnapshotRecord, private readonly reader: EpochReader, private readonly chain: ParentChain | null) {}

  static async open (meta: MetaStore, pool: NodePool, disk: string, snap: string, ioRetryMs = IO_RETRY_MS_DEFAULT): Promise<SnapshotImage> {
    const snapshot = await meta.getSnapshot(disk, snap)
    const record = await meta.getDisk(disk)
    const reader = await EpochReader.open(meta, pool, record, snapshot.epoch, snapshot.sizeBytes, ioRetryMs)
    const chain = await ParentChain.open(meta, pool, record, ioRetryMs)
    return new SnapshotImage(snapshot, reader, chain)
  }

  get sizeBytes (): number { return this.snapshot.sizeBytes }

  async read (offset: number, length: number): Promise<Buffer> {
    if (offset >= this.sizeBytes || length === 0) return Buffer.alloc(0)
    const len = Math.min(length, this.sizeBytes - offset)
    const out = Buffer.allocUnsafe(len)
    await Promise.all(splitRange(offset, len, this.snapshot.blockSizeBytes).map(async (p) => {
      const data = await this.reader.readBlock(p.block, p.offsetInBlock, p.length, this.chain !== null) ??
        await (this.chain as ParentChain).read(p.block, p.offsetInBlock, p.length)
      data.copy(out, p.offsetInRange)
    }))
    return out
  }

  write (): never {
    throw new UkaiError('READ_ONLY', `snapshot ${this.snapshot.disk}@${this.snapshot.name} is read-only`)
  }

  private readonly life = new Lifecycle({
    release: async () => { await Promise.all([this.reader.close(), this.chain?.close()]) }
  })

  close (): Promise<void> { return this.life.close() }
}
