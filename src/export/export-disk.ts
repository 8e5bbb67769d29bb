// `ukai export`: a snapshot as a raw image, or as a "ukai stream" (docs/export-format.md) — full,
// or incremental: only the blocks with a version in (from, to], which are exactly the blocks whose
// content may differ between the two snapshots. Blocks are fetched ahead (a byte budget) and
// written in order; nothing is read twice.
import { MetaStore } from '../meta/store'
import { DiskRecord, SnapshotRecord } from '../meta/schema'
import { UkaiError } from '../errors'
import { changedBetween, loadVersionIndex, writtenAtOrBefore } from './block-versions'
import { NodePool } from '../vdisk/node-pool'
import { ParentChain } from '../vdisk/parent-chain'
import { SnapshotImage } from '../vdisk/snapshot-image'
import { ExportOutput, isZero, openOutput, writeSparse } from './output'
import { SnapshotIdentity, StreamEncoder, StreamHeader, blockLength } from './stream-format'
import { orderedPrefetch } from '../lib/worker-pool'

// Bytes of blocks fetched ahead of the one being written.
const PREFETCH_BYTES = 32 * 1024 * 1024
// One read request to a node (the protocol's limit is 4 MiB).
const READ_CHUNK_BYTES = 1024 * 1024

export type ExportFormat = 'raw' | 'stream'

export interface ExportRequest {
  disk: string
  snapshot: string
  from?: string             // incremental: the base snapshot
  format: ExportFormat
  output: string | ExportOutput  // a path, '-' for stdout, or an output of the caller's (the tenant API's stream)
  onStart?: (totalBytes: number) => void
  onProgress?: (doneBytes: number) => void
}

export interface ExportSummary {
  disk: string
  snapshot: string
  from: string | null
  format: ExportFormat
  kind: 'full' | 'incremental'
  sizeBytes: number
  blockSizeBytes: number
  blocks: number            // blocks read from the nodes
  dataBlocks: number        // blocks carried with data (the rest: unwritten, or zero records)
  dataBytes: number         // their bytes
  outputBytes: number       // bytes written to the output (a sparse raw file: without holes)
  seconds: number
}

export function identityOf (disk: DiskRecord, snap: SnapshotRecord): SnapshotIdentity {
  return { name: snap.name, epoch: snap.epoch, origin: snap.origin ?? { diskUuid: disk.uuid, epoch: snap.epoch } }
}

interface Geometry { sizeBytes: number, blockSizeBytes: number }

async function readBlock (image: SnapshotImage, g: Geometry, block: number): Promise<Buffer> {
  const length = blockLength(g, block)
  const chunks: Array<Promise<Buffer>> = []
  for (let at = 0; at < length; at += READ_CHUNK_BYTES) chunks.push(image.read(block * g.blockSizeBytes + at, Math.min(READ_CHUNK_BYTES, length - at)))
  return Buffer.concat(await Promise.all(chunks), length)
}

// Blocks that may hold data at the snapshot: its own versions at or below the epoch, and for a
// clone the blocks its ancestors wrote (read through).
async function blocksToExport (meta: MetaStore, pool: NodePool, disk: DiskRecord, to: SnapshotRecord, from: SnapshotRecord | null): Promise<number[]> {
  const index = await loadVersionIndex(pool, disk, await meta.loadPlacement(disk))
  if (from !== null) return changedBetween(index, from.epoch, to.epoch)
  const own = writtenAtOrBefore(index, to.epoch)
  const chain = await ParentChain.open(meta, pool, disk, 0)
  if (chain === null) return own
  try {
    return [...new Set([...own, ...await chain.writtenBlocks(meta)])].sort((a, b) => a - b)
  } finally {
    await chain.close()
  }
}

export async function exportSnapshot (meta: MetaStore, pool: NodePool, req: ExportRequest): Promise<ExportSummary> {
  const startedMs = Date.now()
  if (req.from !== undefined && req.format === 'raw') throw UkaiError.badArgument('an incremental export (--from) is always a ukai stream; drop --format raw')
  const disk = await meta.getDisk(req.disk)
  const to = await meta.getSnapshot(req.disk, req.snapshot)
  const from = req.from !== undefined ? await meta.getSnapshot(req.disk, req.from) : null
  if (from !== null && from.epoch >= to.epoch) throw UkaiError.badArgument(`--from ${from.name} (epoch ${from.epoch}) is not older than ${to.name} (epoch ${to.epoch})`)
  // The snapshot's own size: the disk may have grown since.
  const view: Geometry = { sizeBytes: to.sizeBytes, blockSizeBytes: disk.blockSizeBytes }
  const blocks = await blocksToExport(meta, pool, disk, to, from)
  const image = await SnapshotImage.open(meta, pool, req.disk, req.snapshot)
  const lastBlock = Math.ceil(to.sizeBytes / disk.blockSizeBytes)
  const toRead = blocks.filter(b => b < lastBlock)
  const sequentialRaw = req.format === 'raw'
  let out: ExportOutput
  try {
    out = typeof req.output === 'string' ? await openOutput(req.output) : req.output
  } catch (err) {
    await image.close()
    throw err
  }
  const summary: ExportSummary = {
    disk: disk.name, snapshot: to.name, from: from?.name ?? null, format: req.format, kind: from !== null ? 'incremental' : 'full',
    sizeBytes: to.sizeBytes, blockSizeBytes: disk.blockSizeBytes, blocks: toRead.length, dataBlocks: 0, dataBytes: 0, outputBytes: 0, seconds: 0
  }
  const rawAll = sequentialRaw && !out.positional
  req.onStart?.(rawAll ? to.sizeBytes : toRead.reduce((n, b) => n + blockLength(view, b), 0))
  let done = 0
  const ahead = Math.max(2, Math.floor(PREFETCH_BYTES / disk.blockSizeBytes))
  try {
    const fetched = orderedPrefetch(toRead, ahead, async (b) => ({ block: b, data: await readBlock(image, view, b) }))
    if (req.format === 'raw') {
      summary.outputBytes = await writeRaw(out, view, fetched, lastBlock, (b, data) => {
        if (!isZero(data)) { summary.dataBlocks++; summary.dataBytes += data.length }
        done += data.length
        req.onProgress?.(done)
      }, (n) => { if (rawAll) { done += n; req.onProgress?.(done) } })
    } else {
      const header: StreamHeader = {
        v: 1, kind: summary.kind, disk: { name: disk.name, uuid: disk.uuid }, sizeBytes: to.sizeBytes, blockSizeBytes: disk.blockSizeBytes,
        from: from !== null ? identityOf(disk, from) : null, to: identityOf(disk, to), createdAtMs: Date.now()
      }
      const enc = new StreamEncoder(header)
      await out.write(enc.head())
      for await (const { block, data } of fetched) {
        const zero = isZero(data)
        // A full stream leaves zero blocks out (they read as zeros on import anyway); an
        // incremental one must say so, or the base's bytes would remain.
        if (!zero) {
          for (const part of enc.record({ kind: 'data', block, data })) await out.write(part)
          summary.dataBlocks++
          summary.dataBytes += data.length
        } else if (from !== null) {
          for (const part of enc.record({ kind: 'zero', block, length: data.length })) await out.write(part)
        }
        done += data.length
        req.onProgress?.(done)
      }
      await out.write(enc.trailer())
      summary.outputBytes = await out.finish()
    }
  } catch (err) {
    await out.abort()
    throw err
  } finally {
    await image.close()
  }
  summary.seconds = (Date.now() - startedMs) / 1000
  return summary
}

// A raw image: in place with holes on a regular file; in order with zeros elsewhere.
async function writeRaw (
  out: ExportOutput, view: Geometry, fetched: AsyncGenerator<{ block: number, data: Buffer }>, blockCount: number,
  onBlock: (block: number, data: Buffer) => void, onZeros: (bytes: number) => void
): Promise<number> {
  if (out.positional) {
    for await (const { block, data } of fetched) {
      await writeSparse(out, data, block * view.blockSizeBytes)
      onBlock(block, data)
    }
    return await out.finish(view.sizeBytes)
  }
  const zeros = Buffer.alloc(Math.min(view.blockSizeBytes, 4 * 1024 * 1024))
  let next = 0
  const zeroUpTo = async (end: number): Promise<void> => {
    for (; next < end; next++) {
      const length = blockLength(view, next)
      for (let at = 0; at < length; at += zeros.length) await out.write(zeros.subarray(0, Math.min(zeros.length, length - at)))
      onZeros(length)
    }
  }
  for await (const { block, data } of fetched) {
    await zeroUpTo(block)
    await out.write(data)
    onBlock(block, data)
    next = block + 1
  }
  await zeroUpTo(blockCount)
  return await out.finish()
}
