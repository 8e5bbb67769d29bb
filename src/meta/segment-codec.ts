// The binary encoding of a placement segment znode (/ukai/disks/<name>/segments/<i>, schema.ts):
// run-length encoded replica sets with a node table and a CRC32. Separate from schema.ts, which
// names every znode and holds the JSON records, because this one is a byte format of its own
// (its varint writer and reader, its magic and format number) that only the placement map uses.
// test/meta-placement.test.ts checks it both ways and its worst-case size.
import { crc32 } from 'node:zlib'
import { UkaiError } from '../errors'
import { PlacementSegment, REPLICA_STATES, ReplicaSet } from './placement'

// Layout: 'UKPM' u8 format(1) | varint firstBlock | varint nodeCount | nodeCount × (varint len, utf8)
//         | varint runCount | runCount × (varint length, u8 replicaCount, replicaCount × varint (node × 4 + state))
// (node and state share one varint: a worst-case map, every block placed differently, stays
// near 4 bytes a block — about a megabyte for 1 TiB of 4 MiB blocks)
//         | u32be crc32 of everything before it.
const SEGMENT_MAGIC = Buffer.from('UKPM')
const SEGMENT_FORMAT = 1

class Writer {
  private chunks: number[] = []
  byte (b: number): void { this.chunks.push(b & 0xff) }
  varint (n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw UkaiError.internal(`varint out of range: ${n}`)
    while (n >= 0x80) { this.chunks.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
    this.chunks.push(n)
  }
  bytes (b: Buffer): void { for (const x of b) this.chunks.push(x) }
  toBuffer (): Buffer { return Buffer.from(this.chunks) }
}

class Reader {
  pos = 0
  constructor (private readonly buf: Buffer, private readonly what: string) {}
  byte (): number {
    if (this.pos >= this.buf.length) throw UkaiError.internal(`corrupt ${this.what}: truncated`)
    return this.buf[this.pos++]
  }
  varint (): number {
    let n = 0
    let mul = 1
    for (let i = 0; i < 8; i++) {
      const b = this.byte()
      n += (b & 0x7f) * mul
      if ((b & 0x80) === 0) return n
      mul *= 0x80
    }
    throw UkaiError.internal(`corrupt ${this.what}: varint too long`)
  }
  bytes (len: number): Buffer {
    if (this.pos + len > this.buf.length) throw UkaiError.internal(`corrupt ${this.what}: truncated`)
    const b = this.buf.subarray(this.pos, this.pos + len)
    this.pos += len
    return b
  }
}

export function encodeSegment (seg: PlacementSegment): Buffer {
  const runs = seg.runs()
  const nodeIndex = new Map<string, number>()
  for (const run of runs) for (const r of run.replicas) if (!nodeIndex.has(r.node)) nodeIndex.set(r.node, nodeIndex.size)
  const w = new Writer()
  w.bytes(SEGMENT_MAGIC)
  w.byte(SEGMENT_FORMAT)
  w.varint(seg.firstBlock)
  w.varint(nodeIndex.size)
  for (const id of nodeIndex.keys()) { const b = Buffer.from(id); w.varint(b.length); w.bytes(b) }
  w.varint(runs.length)
  for (const run of runs) {
    w.varint(run.length)
    w.byte(run.replicas.length)
    for (const r of run.replicas) w.varint((nodeIndex.get(r.node) as number) * 4 + REPLICA_STATES.indexOf(r.state))
  }
  const body = w.toBuffer()
  const sum = Buffer.alloc(4)
  sum.writeUInt32BE(crc32(body) >>> 0)
  return Buffer.concat([body, sum])
}

export function decodeSegment (index: number, data: Buffer): PlacementSegment {
  const what = `placement segment ${index}`
  if (data.length < 9 || !data.subarray(0, 4).equals(SEGMENT_MAGIC)) throw UkaiError.internal(`corrupt ${what}: bad magic`)
  const body = data.subarray(0, data.length - 4)
  if ((crc32(body) >>> 0) !== data.readUInt32BE(data.length - 4)) throw UkaiError.internal(`corrupt ${what}: checksum mismatch`)
  const r = new Reader(body, what)
  r.bytes(4)
  const format = r.byte()
  if (format !== SEGMENT_FORMAT) throw UkaiError.internal(`${what} has format ${format}; this ukai reads ${SEGMENT_FORMAT}`)
  const firstBlock = r.varint()
  const nodes: string[] = []
  for (let n = r.varint(), i = 0; i < n; i++) nodes.push(r.bytes(r.varint()).toString('utf8'))
  const runs: Array<{ length: number, replicas: ReplicaSet }> = []
  for (let n = r.varint(), i = 0; i < n; i++) {
    const length = r.varint()
    const replicas = []
    for (let k = r.byte(), j = 0; j < k; j++) {
      const packed = r.varint()
      const node = nodes[Math.floor(packed / 4)]
      const state = REPLICA_STATES[packed % 4]
      if (node === undefined || state === undefined) throw UkaiError.internal(`corrupt ${what}: bad replica`)
      replicas.push({ node, state })
    }
    runs.push({ length, replicas })
  }
  if (r.pos !== body.length) throw UkaiError.internal(`corrupt ${what}: trailing bytes`)
  return PlacementSegment.fromRuns(index, firstBlock, runs)
}
