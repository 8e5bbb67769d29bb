// `ukai import`: a raw image or a full stream into a new disk, or an incremental stream onto a disk
// whose current state is the stream's base snapshot.
//
// Nothing is applied before the whole input passed its checks: stdin is spooled to a temp file,
// the stream is verified end to end (every record checksum, the order, the trailer and the stream
// digest), the target is checked (base snapshot identity, no writes since it, not open anywhere),
// and only then is it written — a second pass that verifies again as it goes. If the apply itself
// fails (a node, the lease), a new disk is deleted again and an incremental import is rolled back
// to the base snapshot, so a failed import leaves no half-made disk and the target unchanged.
import { plural } from '../units'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { LeaseManager } from '../meta/lease'
import { DEFAULT_TENANT, SnapshotRecord, validateDiskName } from '../meta/schema'
import { checkTenantRoom } from '../meta/tenants'
import { MetaStore } from '../meta/store'
import { loadVersionIndex, writtenAfter } from './block-versions'
import { cliHostName } from '../admin/admin-lease'
import { createDisk, deleteDisk, resizeDisk } from '../admin/disk-admin'
import { NodePool } from '../vdisk/node-pool'
import { rollbackSnapshot } from '../admin/snapshot-admin'
import { VirtualDisk } from '../vdisk/virtual-disk'
import { identityOf } from './export-disk'
import { SPARSE_GRAIN_BYTES, isZero } from './output'
import { SnapshotIdentity, StreamHeader, StreamRecord, decodeStream, isStreamMagic } from './stream-format'
import { Window } from '../lib/worker-pool'
import { Lifecycle } from '../lib/lifecycle'

// One write request through the disk engine (the protocol's limit is 4 MiB).
const WRITE_CHUNK_BYTES = 1024 * 1024
const WRITES_IN_FLIGHT = 8
const READ_BUFFER_BYTES = 4 * 1024 * 1024

export type ImportFormat = 'auto' | 'raw' | 'stream'

export interface ImportRequest {
  input: string                // a path, or '-' for stdin; with `source`: only its name in messages
  source?: AsyncIterable<Buffer> // the bytes, when they come from elsewhere (the tenant API's stream)
  disk: string                 // the new disk, or (incremental) the disk to apply onto
  incremental: boolean
  format: ImportFormat
  site?: string
  blockSizeBytes?: number
  replicas?: number
  tenant?: string              // the new disk's tenant (default: the default tenant)
  spoolDir?: string            // where stdin is spooled (default: the system temp dir)
  logger?: Logger
  onStart?: (totalBytes: number) => void
  onProgress?: (doneBytes: number) => void
}

export interface ImportSummary {
  disk: string
  source: 'raw' | 'stream'
  kind: 'full' | 'incremental'
  created: boolean            // a new disk
  snapshot: string | null     // the snapshot committed at the end (streams)
  from: string | null
  sizeBytes: number
  blockSizeBytes: number
  records: number
  dataBytes: number           // bytes written to the disk
  inputBytes: number
  seconds: number
}

interface Input { path: string, sizeBytes: number, cleanup: () => Promise<void> }

// stdin, a stream, or anything that is not a regular file, is copied to a temp file first (sparse: all-zero
// grains are skipped), so the whole input can be checked before anything is applied.
async function openInput (input: string, spoolDir: string | undefined, source: AsyncIterable<Buffer> | undefined): Promise<Input> {
  if (input !== '-' && source === undefined) {
    let st: fs.Stats
    try {
      st = await fs.promises.stat(input)
    } catch (err) {
      throw UkaiError.badArgument(`cannot read input '${input}': ${(err as Error).message}`)
    }
    if (st.isDirectory()) throw UkaiError.badArgument(`input '${input}' is a directory`)
    if (st.isFile()) return { path: input, sizeBytes: st.size, cleanup: async () => {} }
  }
  const dir = await fs.promises.mkdtemp(path.join(spoolDir ?? os.tmpdir(), 'ukai-import-'))
  const spool = path.join(dir, 'input')
  const cleanup = async (): Promise<void> => { await fs.promises.rm(dir, { recursive: true, force: true }) }
  try {
    const fh = await fs.promises.open(spool, 'w')
    let size = 0
    try {
      const from = source ?? (input === '-' ? process.stdin : fs.createReadStream(input))
      for await (const chunk of from as AsyncIterable<Buffer>) {
        for (let at = 0; at < chunk.length; at += SPARSE_GRAIN_BYTES) {
          const piece = chunk.subarray(at, at + SPARSE_GRAIN_BYTES)
          if (!isZero(piece)) await fh.write(piece, 0, piece.length, size)
          size += piece.length
        }
      }
      await fh.truncate(size)
    } finally {
      await fh.close()
    }
    return { path: spool, sizeBytes: size, cleanup }
  } catch (err) {
    await cleanup()
    if (isUkaiError(err)) throw err
    throw UkaiError.io(`spooling the input to ${dir} failed: ${(err as Error).message}`)
  }
}

async function looksLikeStream (file: string): Promise<boolean> {
  const fh = await fs.promises.open(file, 'r')
  try {
    const head = Buffer.alloc(8)
    const { bytesRead } = await fh.read(head, 0, 8, 0)
    return isStreamMagic(head.subarray(0, bytesRead))
  } finally {
    await fh.close()
  }
}

function sameIdentity (a: SnapshotIdentity['origin'], b: SnapshotIdentity['origin']): boolean {
  return a.diskUuid === b.diskUuid && a.epoch === b.epoch
}

// The disk engine plus a lease of our own, for the duration of one import.
class ImportWriter {
  private readonly window = new Window(WRITES_IN_FLIGHT)
  private constructor (readonly meta: MetaStore, readonly disk: VirtualDisk, private readonly leases: LeaseManager, private readonly host: string) {}

  static async open (meta: MetaStore, pool: NodePool, name: string, log: Logger): Promise<ImportWriter> {
    const host = cliHostName()
    let disk: VirtualDisk | null = null
    // An import does not hand over: whoever wants the disk takes the lease by force after its
    // timeout, our next write is fenced and the import is undone.
    const leases = new LeaseManager(meta, host, {
      onHandoverRequested: (d, requester) => log.warn({ disk: d, requester }, 'lease requested during an import; keeping it'),
      onLost: () => disk?.leaseLost()
    }, { logger: log })
    disk = await VirtualDisk.open({ meta, pool, leases, logger: log }, name)
    return new ImportWriter(meta, disk, leases, host)
  }

  // Writes `data` at `offset`, in chunks, several in flight.
  async write (offset: number, data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += WRITE_CHUNK_BYTES) {
      const piece = data.subarray(at, Math.min(at + WRITE_CHUNK_BYTES, data.length))
      await this.window.add(async () => await this.disk.write(offset + at, piece))
    }
  }

  // A block that became zeros is discarded (the nodes punch the head version's hole; the base
  // snapshot's version stays), not written as zeros: thin disks stay thin.
  async writeZeros (offset: number, length: number): Promise<void> {
    await this.window.add(async () => await this.disk.discard(offset, length))
  }

  async flush (): Promise<void> {
    await this.window.drain()
    await this.disk.flush()
  }

  // Commits the disk's current state as snapshot `name` while we hold the lease.
  async commitSnapshot (name: string, origin: SnapshotIdentity['origin']): Promise<SnapshotRecord> {
    const lease = await this.disk.ensureLease()
    const holder = await this.meta.getLease(this.disk.name)
    if (holder === null || holder.host !== this.host || holder.leaseEpoch !== lease.leaseEpoch) throw UkaiError.fenced(`lost the lease of '${this.disk.name}' before the snapshot was committed`)
    return await this.meta.commitSnapshot(await this.meta.getDisk(this.disk.name), name, { leaseVersion: holder.version, origin })
  }

  // close(): the writes in flight finish (their errors were the caller's), the disk flushes and
  // closes, leases left over are let go. destroy(err): the disk is destroyed instead (no flush).
  private readonly life = new Lifecycle({
    drain: async () => {
      await this.window.drain().catch(safetyCatch)
      await this.disk.close()
    },
    abort: async (err) => { await this.disk.destroy(err) },
    release: async () => {
      for (const d of this.leases.heldDisks()) await this.leases.release(d).catch(safetyCatch)
    }
  })

  close (): Promise<void> { return this.life.close() }
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }
}

export async function importDisk (meta: MetaStore, pool: NodePool, req: ImportRequest): Promise<ImportSummary> {
  const startedMs = Date.now()
  const log = req.logger ?? silentLogger
  validateDiskName(req.disk)
  if (!req.incremental && (await meta.listDiskNames()).includes(req.disk)) throw UkaiError.alreadyExists(`disk '${req.disk}' already exists`)
  const input = await openInput(req.input, req.spoolDir, req.source)
  try {
    const isStream = req.format === 'stream' || (req.format === 'auto' && await looksLikeStream(input.path))
    if (req.incremental && !isStream) throw UkaiError.badArgument(`--incremental needs a ukai stream; '${req.input}' is not one`)
    if (!isStream) return await importRaw(meta, pool, req, input, log, startedMs)
    // Pass 1: the whole stream is verified before anything is touched.
    const checked = await decodeStream(fs.createReadStream(input.path, { highWaterMark: READ_BUFFER_BYTES }))
    const header = checked.header
    if (req.incremental && header.kind !== 'incremental') throw UkaiError.badArgument(`'${req.input}' is a full stream; import it as a new disk (without --incremental)`)
    if (!req.incremental && header.kind !== 'full') throw UkaiError.badArgument(`'${req.input}' is an incremental stream (from ${header.from?.name} to ${header.to.name}); apply it with --incremental onto a disk at ${header.from?.name}`)
    const total = header.kind === 'full' ? checked.totals.dataBytes : recordBytesTotal(checked.totals, header)
    const summary: ImportSummary = {
      disk: req.disk, source: 'stream', kind: header.kind, created: header.kind === 'full', snapshot: header.to.name, from: header.from?.name ?? null,
      sizeBytes: header.sizeBytes, blockSizeBytes: header.blockSizeBytes, records: checked.totals.records, dataBytes: checked.totals.dataBytes, inputBytes: input.sizeBytes, seconds: 0
    }
    if (header.kind === 'full') await importFullStream(meta, pool, req, input, header, total, log)
    else await importIncremental(meta, pool, req, input, header, total, log)
    summary.seconds = (Date.now() - startedMs) / 1000
    return summary
  } finally {
    await input.cleanup()
  }
}

// Bytes an incremental apply writes: data records and zero records alike.
function recordBytesTotal (totals: { records: number, dataRecords: number, dataBytes: number }, header: StreamHeader): number {
  return totals.dataBytes + (totals.records - totals.dataRecords) * header.blockSizeBytes
}

// Pass 2: decode again (every checksum again: the file may have changed meanwhile) and write.
async function applyStream (input: Input, header: StreamHeader, writer: ImportWriter, req: ImportRequest): Promise<void> {
  let done = 0
  await decodeStream(fs.createReadStream(input.path, { highWaterMark: READ_BUFFER_BYTES }), {
    onHeader: (h) => { if (JSON.stringify(h) !== JSON.stringify(header)) throw UkaiError.corruptStream(`'${req.input}' changed while it was being imported`) },
    onRecord: async (r: StreamRecord) => {
      const offset = r.block * header.blockSizeBytes
      if (r.kind === 'data') { await writer.write(offset, r.data); done += r.data.length } else if (header.kind === 'incremental') { await writer.writeZeros(offset, r.length); done += r.length }
      req.onProgress?.(done)
    }
  })
  await writer.flush()
}

async function createTarget (meta: MetaStore, req: ImportRequest, sizeBytes: number, blockSizeBytes: number): Promise<void> {
  await createDisk(meta, { name: req.disk, sizeBytes, blockSizeBytes: req.blockSizeBytes ?? blockSizeBytes, replicas: req.replicas, site: req.site, tenant: req.tenant })
}

// Runs `fn` on a freshly created disk; any failure deletes the disk again.
async function intoNewDisk (meta: MetaStore, pool: NodePool, req: ImportRequest, log: Logger, fn: (w: ImportWriter) => Promise<void>): Promise<void> {
  let writer: ImportWriter | null = null
  try {
    writer = await ImportWriter.open(meta, pool, req.disk, log)
    await fn(writer)
    await writer.close()
  } catch (err) {
    await writer?.close().catch(() => {})
    await deleteDisk(meta, req.disk, { logger: log }).catch((e) => log.error({ disk: req.disk, err: String(e) }, 'could not delete the disk of a failed import'))
    throw err
  }
}

async function importFullStream (meta: MetaStore, pool: NodePool, req: ImportRequest, input: Input, header: StreamHeader, total: number, log: Logger): Promise<void> {
  // Refused before anything is written when the tenant has no room for the disk and its snapshot
  // (the creates below check again, atomically: this only spares writing what would be undone).
  await checkTenantRoom(meta, req.tenant ?? DEFAULT_TENANT, { capacityBytes: header.sizeBytes, disks: 1, snapshots: 1 }, `importing '${req.input}' into disk '${req.disk}'`)
  await createTarget(meta, req, header.sizeBytes, header.blockSizeBytes)
  req.onStart?.(total)
  await intoNewDisk(meta, pool, req, log, async (w) => {
    await applyStream(input, header, w, req)
    await w.commitSnapshot(header.to.name, header.to.origin)
  })
}

async function importRaw (meta: MetaStore, pool: NodePool, req: ImportRequest, input: Input, log: Logger, startedMs: number): Promise<ImportSummary> {
  if (input.sizeBytes % 512 !== 0) throw UkaiError.badArgument(`raw image '${req.input}' is ${input.sizeBytes} bytes, not a multiple of 512`)
  const config = await meta.config()
  const blockSizeBytes = req.blockSizeBytes ?? config.defaultBlockSizeBytes
  await createTarget(meta, req, input.sizeBytes, blockSizeBytes)
  req.onStart?.(input.sizeBytes)
  let written = 0
  await intoNewDisk(meta, pool, req, log, async (w) => {
    let done = 0
    for await (const chunk of fs.createReadStream(input.path, { highWaterMark: READ_BUFFER_BYTES }) as AsyncIterable<Buffer>) {
      // A thin disk stays thin: all-zero grains are not written.
      for (let at = 0; at < chunk.length; at += SPARSE_GRAIN_BYTES) {
        const piece = chunk.subarray(at, at + SPARSE_GRAIN_BYTES)
        if (!isZero(piece)) { await w.write(done + at, Buffer.from(piece)); written += piece.length }
      }
      done += chunk.length
      req.onProgress?.(done)
    }
    if (done !== input.sizeBytes) throw UkaiError.io(`'${req.input}' changed size while it was being imported (${input.sizeBytes} → ${done} bytes)`)
    await w.flush()
  })
  return {
    disk: req.disk, source: 'raw', kind: 'full', created: true, snapshot: null, from: null, sizeBytes: input.sizeBytes, blockSizeBytes,
    records: 0, dataBytes: written, inputBytes: input.sizeBytes, seconds: (Date.now() - startedMs) / 1000
  }
}

async function importIncremental (meta: MetaStore, pool: NodePool, req: ImportRequest, input: Input, header: StreamHeader, total: number, log: Logger): Promise<void> {
  const from = header.from as SnapshotIdentity
  const disk = await meta.getDisk(req.disk)
  const snaps = await meta.listSnapshots(req.disk)
  const base = snaps.find(s => s.name === from.name)
  if (base === undefined) throw UkaiError.wrongBase(`disk '${req.disk}' has no snapshot '${from.name}', the base of this stream (${from.name} → ${header.to.name} of ${header.disk.name}); nothing was applied`)
  const baseId = identityOf(disk, base).origin
  if (!sameIdentity(baseId, from.origin)) {
    throw UkaiError.wrongBase(`snapshot ${req.disk}@${from.name} is not this stream's base: it holds disk ${baseId.diskUuid} at epoch ${baseId.epoch}, the stream applies onto disk ${from.origin.diskUuid} at epoch ${from.origin.epoch}; nothing was applied`)
  }
  if (snaps.some(s => s.name === header.to.name)) throw UkaiError.alreadyExists(`disk '${req.disk}' already has a snapshot '${header.to.name}' (the stream's target); nothing was applied`)
  if (header.blockSizeBytes !== disk.blockSizeBytes && disk.sizeBytes % header.blockSizeBytes !== 0) {
    throw UkaiError.wrongBase(`disk '${req.disk}' has ${disk.blockSizeBytes}-byte blocks and a size that is not a multiple of the stream's ${header.blockSizeBytes}-byte blocks`)
  }
  if (header.sizeBytes < base.sizeBytes) throw UkaiError.wrongBase(`the stream's disk (${header.sizeBytes} bytes) is smaller than snapshot ${req.disk}@${from.name} (${base.sizeBytes} bytes)`)
  const opens = await meta.listOpens(req.disk)
  if (opens.length > 0) throw UkaiError.busy(`disk '${req.disk}' is open on ${opens.join(', ')}; close it before applying an incremental stream (nothing was applied)`)
  if (await meta.leaseHeldAnywhere(req.disk)) throw UkaiError.busy(`disk '${req.disk}' is open for write; close it first (nothing was applied)`)
  const written = writtenAfter(await loadVersionIndex(pool, disk, await meta.loadPlacement(disk)), base.epoch)
  if (written.length > 0) {
    throw UkaiError.wrongBase(`disk '${req.disk}' has changed since snapshot ${from.name} (${plural(written.length, 'block')} written since); roll it back first ('ukai snapshot rollback ${req.disk}@${from.name}'); nothing was applied`)
  }
  await checkTenantRoom(meta, disk.tenant, { capacityBytes: Math.max(0, header.sizeBytes - disk.sizeBytes), snapshots: 1 }, `importing '${req.input}' onto disk '${req.disk}'`)
  if (header.sizeBytes > disk.sizeBytes) await resizeDisk(meta, req.disk, header.sizeBytes)
  req.onStart?.(total)
  let writer: ImportWriter | null = null
  try {
    writer = await ImportWriter.open(meta, pool, req.disk, log)
    await applyStream(input, header, writer, req)
    await writer.commitSnapshot(header.to.name, header.to.origin)
    await writer.close()
  } catch (err) {
    await writer?.close().catch(() => {})
    try {
      // Drops every version written since the base: the disk reads as before the import.
      await rollbackSnapshot({ meta, host: cliHostName(), logger: log }, req.disk, from.name)
    } catch (e) {
      throw new UkaiError((err as UkaiError).code ?? 'IO_ERROR', `${(err as Error).message}; rolling back to ${from.name} failed too (${(e as Error).message}): run 'ukai snapshot rollback ${req.disk}@${from.name}'`)
    }
    throw new UkaiError((err as UkaiError).code ?? 'IO_ERROR', `${(err as Error).message}; the disk was rolled back to ${from.name}`)
  }
}
