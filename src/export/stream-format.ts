// The one module that owns the "ukai stream" encoding of exports (docs/export-format.md):
//
//   header  : magic 'UKAISTRM' | u16be format (1) | u32be JSON length | JSON (StreamHeader) | sha256
//   records : u8 tag ('B' data | 'Z' zeros) | u64be block | u32be length | data ('B' only) | sha256
//   trailer : u8 tag 'E' | u64be records | u64be data records | u64be data bytes | sha256 (stream)
//
// Every record's digest covers its tag, index, length and data; the stream digest is SHA-256 over
// the header digest, every record digest in order and the trailer's counts — a chain that binds
// every byte without hashing the data twice. A reader checks each digest as it goes, the order of
// the records (strictly ascending blocks, each block's exact length) and the trailer, and refuses
// anything after it. Nothing in a stream is trusted before its digest matched.
import { createHash, Hash } from 'node:crypto'
import { UkaiError } from '../errors'
import { BLOCK_SIZE_MAX_BYTES, BLOCK_SIZE_MIN_BYTES } from '../lib/limits'
import { DISK_SIZE_MAX_BYTES } from '../meta/schema'

export const STREAM_MAGIC = Buffer.from('UKAISTRM')
export const STREAM_FORMAT = 1
const DIGEST_BYTES = 32
const HEADER_JSON_MAX_BYTES = 64 * 1024
const HEADER_FIXED_BYTES = STREAM_MAGIC.length + 2 + 4
const RECORD_HEAD_BYTES = 1 + 8 + 4
const TRAILER_BYTES = 1 + 8 + 8 + 8 + DIGEST_BYTES
const TAG_DATA = 0x42 // 'B'
const TAG_ZERO = 0x5a // 'Z'
const TAG_END = 0x45  // 'E'

// Which committed version a snapshot is, as the cluster that made it knows it. `origin` names the
// disk and epoch the content first came from, so a chain of incrementals stays checkable after an
// import into another cluster (where the disk's uuid and epochs differ).
export interface SnapshotIdentity {
  name: string
  epoch: number
  origin: { diskUuid: string, epoch: number }
}

export interface StreamHeader {
  v: 1
  kind: 'full' | 'incremental'
  disk: { name: string, uuid: string }
  sizeBytes: number
  blockSizeBytes: number
  from: SnapshotIdentity | null // the base an incremental applies onto; null for a full stream
  to: SnapshotIdentity
  createdAtMs: number
}

export type StreamRecord =
  | { kind: 'data', block: number, data: Buffer }
  | { kind: 'zero', block: number, length: number }

export interface StreamTotals { records: number, dataRecords: number, dataBytes: number }

export function blockLength (h: Pick<StreamHeader, 'sizeBytes' | 'blockSizeBytes'>, block: number): number {
  return Math.min(h.blockSizeBytes, h.sizeBytes - block * h.blockSizeBytes)
}

export function isStreamMagic (head: Buffer): boolean {
  return head.length >= STREAM_MAGIC.length && head.subarray(0, STREAM_MAGIC.length).equals(STREAM_MAGIC)
}

function corrupt (msg: string): UkaiError {
  return UkaiError.corruptStream(msg)
}

function u64 (n: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(n))
  return b
}

function readU64 (b: Buffer, at: number, what: string): number {
  const n = b.readBigUInt64BE(at)
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} ${n} is out of range`)
  return Number(n)
}

function sha256 (...parts: Buffer[]): Buffer {
  const h = createHash('sha256')
  for (const p of parts) h.update(p)
  return h.digest()
}

function checkIdentity (id: unknown, what: string): void {
  const s = id as SnapshotIdentity
  const ok = typeof s === 'object' && s !== null && typeof s.name === 'string' && s.name !== '' &&
    Number.isSafeInteger(s.epoch) && s.epoch > 0 && typeof s.origin === 'object' && s.origin !== null &&
    typeof s.origin.diskUuid === 'string' && s.origin.diskUuid !== '' && Number.isSafeInteger(s.origin.epoch) && s.origin.epoch > 0
  if (!ok) throw corrupt(`header: bad ${what} snapshot`)
}

// Checks what the encoder writes and the decoder reads: the same rules on both sides.
export function validateHeader (h: StreamHeader): void {
  if (h?.v !== 1) throw corrupt(`header has version ${String((h as { v?: unknown })?.v)}; this ukai reads version 1`)
  if (h.kind !== 'full' && h.kind !== 'incremental') throw corrupt(`header: unknown kind '${String(h.kind)}'`)
  if (typeof h.disk?.name !== 'string' || typeof h.disk?.uuid !== 'string') throw corrupt('header: bad source disk')
  const bs = h.blockSizeBytes
  if (!Number.isSafeInteger(bs) || bs < BLOCK_SIZE_MIN_BYTES || bs > BLOCK_SIZE_MAX_BYTES || (bs & (bs - 1)) !== 0) throw corrupt(`header: bad block size ${bs}`)
  if (!Number.isSafeInteger(h.sizeBytes) || h.sizeBytes < 0 || h.sizeBytes > DISK_SIZE_MAX_BYTES || h.sizeBytes % 512 !== 0) throw corrupt(`header: bad disk size ${h.sizeBytes}`)
  checkIdentity(h.to, 'target')
  if (h.kind === 'incremental') {
    checkIdentity(h.from, 'base')
    if ((h.from as SnapshotIdentity).epoch >= h.to.epoch) throw corrupt(`header: base epoch ${h.from?.epoch} is not older than target epoch ${h.to.epoch}`)
  } else if (h.from !== null) {
    throw corrupt('header: a full stream has no base snapshot')
  }
}

// ---- encoding ----

// Produces the stream's bytes piece by piece; the caller writes them where it likes.
export class StreamEncoder {
  private readonly chain: Hash = createHash('sha256')
  private readonly header: StreamHeader
  private lastBlock = -1
  private ended = false
  readonly totals: StreamTotals = { records: 0, dataRecords: 0, dataBytes: 0 }

  constructor (header: StreamHeader) {
    validateHeader(header)
    this.header = header
  }

  head (): Buffer {
    const json = Buffer.from(JSON.stringify(this.header))
    const fixed = Buffer.alloc(HEADER_FIXED_BYTES)
    STREAM_MAGIC.copy(fixed, 0)
    fixed.writeUInt16BE(STREAM_FORMAT, STREAM_MAGIC.length)
    fixed.writeUInt32BE(json.length, STREAM_MAGIC.length + 2)
    const digest = sha256(fixed, json)
    this.chain.update(digest)
    return Buffer.concat([fixed, json, digest])
  }

  // The record as a list of buffers (the data is not copied).
  record (r: StreamRecord): Buffer[] {
    if (this.ended) throw UkaiError.internal('stream record after the trailer')
    if (r.block <= this.lastBlock) throw UkaiError.internal(`stream records out of order: ${r.block} after ${this.lastBlock}`)
    const expected = blockLength(this.header, r.block)
    const length = r.kind === 'data' ? r.data.length : r.length
    if (!(expected > 0) || length !== expected) throw UkaiError.internal(`stream record for block ${r.block}: ${length} bytes, the block has ${expected}`)
    this.lastBlock = r.block
    const head = Buffer.alloc(RECORD_HEAD_BYTES)
    head.writeUInt8(r.kind === 'data' ? TAG_DATA : TAG_ZERO, 0)
    u64(r.block).copy(head, 1)
    head.writeUInt32BE(length, 9)
    const digest = r.kind === 'data' ? sha256(head, r.data) : sha256(head)
    this.chain.update(digest)
    this.totals.records++
    if (r.kind === 'data') { this.totals.dataRecords++; this.totals.dataBytes += length }
    return r.kind === 'data' ? [head, r.data, digest] : [head, digest]
  }

  trailer (): Buffer {
    if (this.ended) throw UkaiError.internal('stream trailer written twice')
    this.ended = true
    const counts = Buffer.concat([Buffer.from([TAG_END]), u64(this.totals.records), u64(this.totals.dataRecords), u64(this.totals.dataBytes)])
    this.chain.update(counts)
    return Buffer.concat([counts, this.chain.digest()])
  }
}

// Bytes a record takes in the stream (for size estimates and benchmarks).
export function recordBytes (kind: 'data' | 'zero', length: number): number {
  return RECORD_HEAD_BYTES + (kind === 'data' ? length : 0) + DIGEST_BYTES
}
export const TRAILER_SIZE_BYTES = TRAILER_BYTES

// ---- decoding ----

// Reads exact byte counts from an async source of chunks (a file or stdin stream).
export class ByteSource {
  private readonly it: AsyncIterator<Buffer>
  private chunks: Buffer[] = []
  private buffered = 0
  private done = false
  consumed = 0

  constructor (source: AsyncIterable<Buffer | string>) {
    this.it = (source as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
  }

  private async fill (n: number): Promise<boolean> {
    while (this.buffered < n && !this.done) {
      const next = await this.it.next()
      if (next.done === true) { this.done = true; break }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value
      if (chunk.length > 0) { this.chunks.push(chunk); this.buffered += chunk.length }
    }
    return this.buffered >= n
  }

  // Exactly n bytes, or null at a clean end of input (nothing buffered); truncation mid-way throws.
  async read (n: number, what: string): Promise<Buffer | null> {
    if (!await this.fill(n)) {
      if (this.buffered === 0) return null
      throw corrupt(`truncated: the stream ends ${this.buffered} bytes into ${what} (${n} bytes expected) at offset ${this.consumed}`)
    }
    let out: Buffer
    if (this.chunks[0].length >= n) {
      out = this.chunks[0].subarray(0, n)
      this.chunks[0] = this.chunks[0].subarray(n)
      if (this.chunks[0].length === 0) this.chunks.shift()
    } else {
      out = Buffer.allocUnsafe(n)
      let at = 0
      while (at < n) {
        const c = this.chunks[0]
        const take = Math.min(c.length, n - at)
        c.copy(out, at, 0, take)
        at += take
        if (take === c.length) this.chunks.shift()
        else this.chunks[0] = c.subarray(take)
      }
    }
    this.buffered -= n
    this.consumed += n
    return out
  }

  async exactly (n: number, what: string): Promise<Buffer> {
    const b = await this.read(n, what)
    if (b === null) throw corrupt(`truncated: the stream ends before ${what} at offset ${this.consumed}`)
    return b
  }

  async atEnd (): Promise<boolean> {
    return !await this.fill(1)
  }
}

export async function readHeader (src: ByteSource, chain: Hash): Promise<StreamHeader> {
  const fixed = await src.read(HEADER_FIXED_BYTES, 'the header')
  if (fixed === null) throw corrupt('empty input: not a ukai stream')
  if (!isStreamMagic(fixed)) throw corrupt('not a ukai stream (bad magic)')
  const format = fixed.readUInt16BE(STREAM_MAGIC.length)
  if (format !== STREAM_FORMAT) throw corrupt(`stream format ${format}; this ukai reads format ${STREAM_FORMAT}`)
  const jsonLength = fixed.readUInt32BE(STREAM_MAGIC.length + 2)
  if (jsonLength > HEADER_JSON_MAX_BYTES) throw corrupt(`header of ${jsonLength} bytes exceeds the limit of ${HEADER_JSON_MAX_BYTES}`)
  const json = await src.exactly(jsonLength, 'the header')
  const digest = await src.exactly(DIGEST_BYTES, 'the header digest')
  if (!sha256(fixed, json).equals(digest)) throw corrupt('header checksum mismatch')
  chain.update(digest)
  let header: StreamHeader
  try {
    header = JSON.parse(json.toString('utf8')) as StreamHeader
  } catch {
    throw corrupt('header is not JSON')
  }
  validateHeader(header)
  return header
}

// Reads and checks a whole stream, handing each verified record to `onRecord` (which may be
// slow: the next record is read only after it resolved). Throws CORRUPT_STREAM on any flaw.
export async function decodeStream (
  source: AsyncIterable<Buffer | string>,
  handlers: { onHeader?: (h: StreamHeader) => void | Promise<void>, onRecord?: (r: StreamRecord, h: StreamHeader) => void | Promise<void> } = {}
): Promise<{ header: StreamHeader, totals: StreamTotals, streamBytes: number }> {
  const src = new ByteSource(source)
  const chain = createHash('sha256')
  const header = await readHeader(src, chain)
  await handlers.onHeader?.(header)
  const blocks = Math.ceil(header.sizeBytes / header.blockSizeBytes)
  const totals: StreamTotals = { records: 0, dataRecords: 0, dataBytes: 0 }
  let lastBlock = -1
  for (;;) {
    const tag = (await src.exactly(1, `record ${totals.records + 1} (or the trailer)`))[0]
    if (tag === TAG_END) {
      const rest = await src.exactly(TRAILER_BYTES - 1, 'the trailer')
      const counts = Buffer.concat([Buffer.from([tag]), rest.subarray(0, 24)])
      const got = { records: readU64(rest, 0, 'record count'), dataRecords: readU64(rest, 8, 'data record count'), dataBytes: readU64(rest, 16, 'data byte count') }
      if (got.records !== totals.records || got.dataRecords !== totals.dataRecords || got.dataBytes !== totals.dataBytes) {
        throw corrupt(`trailer counts (${got.records} records, ${got.dataBytes} data bytes) differ from the stream (${totals.records} records, ${totals.dataBytes} data bytes)`)
      }
      chain.update(counts)
      if (!chain.digest().equals(rest.subarray(24))) throw corrupt('stream checksum mismatch (trailer)')
      if (!await src.atEnd()) throw corrupt(`unexpected bytes after the trailer at offset ${src.consumed}`)
      return { header, totals, streamBytes: src.consumed }
    }
    if (tag !== TAG_DATA && tag !== TAG_ZERO) throw corrupt(`bad record tag 0x${tag.toString(16)} at offset ${src.consumed - 1}`)
    const rest = await src.exactly(RECORD_HEAD_BYTES - 1, 'a record header')
    const block = readU64(rest, 0, 'block index')
    const length = rest.readUInt32BE(8)
    if (block <= lastBlock) throw corrupt(`record for block ${block} follows block ${lastBlock} (records must ascend)`)
    if (block >= blocks) throw corrupt(`record for block ${block}: the disk has ${blocks} blocks`)
    if (length !== blockLength(header, block)) throw corrupt(`record for block ${block} has ${length} bytes; the block has ${blockLength(header, block)}`)
    const head = Buffer.concat([Buffer.from([tag]), rest])
    const data = tag === TAG_DATA ? await src.exactly(length, `the data of block ${block}`) : null
    const digest = await src.exactly(DIGEST_BYTES, `the checksum of block ${block}`)
    const want = data !== null ? sha256(head, data) : sha256(head)
    if (!want.equals(digest)) throw corrupt(`checksum mismatch in the record of block ${block}`)
    chain.update(digest)
    lastBlock = block
    totals.records++
    if (data !== null) { totals.dataRecords++; totals.dataBytes += length }
    await handlers.onRecord?.(data !== null ? { kind: 'data', block, data } : { kind: 'zero', block, length }, header)
  }
}
