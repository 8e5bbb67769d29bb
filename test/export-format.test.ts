// The "ukai stream" codec on its own: a round trip gives back exactly what was encoded, and any
// flipped byte, truncation, trailing garbage or malformed header is refused with CORRUPT_STREAM
// before the reader hands out anything it could not verify.
import { createHash } from 'node:crypto'
import t, { Test } from 'tap'
import { isUkaiError } from '../src/errors'
import { StreamEncoder, StreamHeader, StreamRecord, decodeStream, recordBytes, TRAILER_SIZE_BYTES } from '../src/export/stream-format'
import { randomBytes, rng } from './helpers/model'

const KiB = 1024
const BS = 64 * KiB

function header (over: Partial<StreamHeader> = {}): StreamHeader {
  return {
    v: 1,
    kind: 'incremental',
    disk: { name: 'vm01', uuid: 'u-1' },
    sizeBytes: 10 * BS - 512, // the last block is short
    blockSizeBytes: BS,
    from: { name: 's1', epoch: 2, origin: { diskUuid: 'u-1', epoch: 2 } },
    to: { name: 's2', epoch: 5, origin: { diskUuid: 'u-1', epoch: 5 } },
    createdAtMs: 1,
    ...over
  }
}

function encode (h: StreamHeader, records: StreamRecord[]): Buffer {
  const enc = new StreamEncoder(h)
  const parts = [enc.head()]
  for (const r of records) parts.push(...enc.record(r))
  parts.push(enc.trailer())
  return Buffer.concat(parts)
}

// Feeds the stream in small uneven chunks, as a pipe would.
async function * chunks (b: Buffer, size = 1000): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

async function decodeAll (b: Buffer): Promise<{ header: StreamHeader, records: StreamRecord[] }> {
  const records: StreamRecord[] = []
  const { header } = await decodeStream(chunks(b), { onRecord: r => { records.push(r.kind === 'data' ? { ...r, data: Buffer.from(r.data) } : r) } })
  return { header, records }
}

async function refusal (t: Test, b: Buffer, pattern: RegExp, what: string): Promise<void> {
  try {
    await decodeAll(b)
    t.fail(`${what}: accepted`)
  } catch (err) {
    t.ok(isUkaiError(err, 'CORRUPT_STREAM'), `${what}: CORRUPT_STREAM (${(err as Error).message})`)
    t.match((err as Error).message, pattern, what)
  }
}

const rand = rng(42)
const sample: StreamRecord[] = [
  { kind: 'data', block: 0, data: randomBytes(rand, BS) },
  { kind: 'zero', block: 3, length: BS },
  { kind: 'data', block: 4, data: randomBytes(rand, BS) },
  { kind: 'data', block: 9, data: randomBytes(rand, BS - 512) }
]

t.test('round trip: the decoder returns the header and every record as encoded', async (t) => {
  const bytes = encode(header(), sample)
  const got = await decodeAll(bytes)
  t.same(got.header, header())
  t.equal(got.records.length, sample.length)
  for (let i = 0; i < sample.length; i++) {
    const a = sample[i]
    const b = got.records[i]
    t.equal(b.kind, a.kind)
    t.equal(b.block, a.block)
    if (a.kind === 'data' && b.kind === 'data') t.ok(b.data.equals(a.data), `block ${a.block} data identical`)
  }
  const expectSize = bytes.length - TRAILER_SIZE_BYTES - sample.reduce((n, r) => n + recordBytes(r.kind, r.kind === 'data' ? r.data.length : 0), 0)
  t.ok(expectSize > 0 && expectSize < 1024, `header is small (${expectSize} bytes)`)
  // A full stream with no records at all is valid too (an empty disk).
  const empty = await decodeAll(encode(header({ kind: 'full', from: null }), []))
  t.equal(empty.records.length, 0)
})

t.test('a flipped byte anywhere is refused', async (t) => {
  const bytes = encode(header(), sample)
  // Every byte of the header and record framing, and a sample of data bytes.
  const positions = new Set<number>()
  for (let i = 0; i < 400; i++) positions.add(i)
  for (let i = bytes.length - 200; i < bytes.length; i++) positions.add(i)
  for (let i = 0; i < 200; i++) positions.add(Math.floor(rand() * bytes.length))
  let refused = 0
  for (const at of positions) {
    const bad = Buffer.from(bytes)
    bad[at] ^= 0x01 << (at % 8)
    try {
      await decodeAll(bad)
    } catch (err) {
      if (isUkaiError(err, 'CORRUPT_STREAM')) refused++
      else t.fail(`flip at ${at}: ${String(err)}`)
    }
  }
  t.equal(refused, positions.size, `all ${positions.size} flipped positions refused`)
  const dataFlip = Buffer.from(bytes)
  dataFlip[600] ^= 0xff
  await refusal(t, dataFlip, /checksum mismatch in the record of block 0/, 'flip in the data of block 0')
})

t.test('truncation anywhere is refused, also exactly at a record boundary', async (t) => {
  const bytes = encode(header(), sample)
  const cuts = [0, 5, 20, 100, bytes.length - 1, bytes.length - TRAILER_SIZE_BYTES, bytes.length - TRAILER_SIZE_BYTES + 3]
  for (let i = 0; i < 50; i++) cuts.push(Math.floor(rand() * bytes.length))
  for (const cut of cuts) {
    try {
      await decodeAll(bytes.subarray(0, cut))
      t.fail(`cut at ${cut} accepted`)
    } catch (err) {
      if (!isUkaiError(err, 'CORRUPT_STREAM')) t.fail(`cut at ${cut}: ${String(err)}`)
    }
  }
  t.pass(`${cuts.length} truncations refused`)
  await refusal(t, bytes.subarray(0, bytes.length - TRAILER_SIZE_BYTES), /truncated/, 'no trailer')
  await refusal(t, Buffer.alloc(0), /empty input/, 'empty input')
})

t.test('trailing bytes, a wrong magic or format, and bad headers are refused', async (t) => {
  const bytes = encode(header(), sample)
  await refusal(t, Buffer.concat([bytes, Buffer.from('x')]), /after the trailer/, 'trailing garbage')
  await refusal(t, Buffer.concat([bytes, bytes]), /after the trailer/, 'two streams concatenated')
  const raw = Buffer.alloc(4096, 0)
  await refusal(t, raw, /bad magic/, 'a raw image')
  const fmt = Buffer.from(bytes)
  fmt.writeUInt16BE(9, 8)
  await refusal(t, fmt, /format 9/, 'an unknown format version')
  t.throws(() => new StreamEncoder(header({ blockSizeBytes: 1000 })), /bad block size/)
  t.throws(() => new StreamEncoder(header({ from: null })), /bad base snapshot/)
  t.throws(() => new StreamEncoder(header({ kind: 'full' })), /full stream has no base/)
  t.throws(() => new StreamEncoder(header({ from: { name: 's', epoch: 9, origin: { diskUuid: 'u', epoch: 9 } } })), /not older/)
})

t.test('the encoder refuses records out of order or of the wrong length', async (t) => {
  const enc = new StreamEncoder(header())
  enc.head()
  enc.record({ kind: 'zero', block: 2, length: BS })
  t.throws(() => enc.record({ kind: 'zero', block: 2, length: BS }), /out of order/)
  t.throws(() => enc.record({ kind: 'data', block: 3, data: Buffer.alloc(100) }), /the block has/)
  t.throws(() => enc.record({ kind: 'zero', block: 10, length: BS }), /the block has/)
})

t.test('a stream written by hand against the documented layout decodes (docs/export-format.md)', async (t) => {
  // Independent of the encoder: build the bytes the way the document describes them.
  const h = header({ kind: 'full', from: null, sizeBytes: BS })
  const json = Buffer.from(JSON.stringify(h))
  const fixed = Buffer.concat([Buffer.from('UKAISTRM'), Buffer.from([0, 1]), Buffer.alloc(4)])
  fixed.writeUInt32BE(json.length, 10)
  const sha = (...p: Buffer[]): Buffer => { const x = createHash('sha256'); for (const b of p) x.update(b); return x.digest() }
  const hd = sha(fixed, json)
  const data = Buffer.alloc(BS, 7)
  const rh = Buffer.alloc(13)
  rh[0] = 0x42
  rh.writeBigUInt64BE(0n, 1)
  rh.writeUInt32BE(BS, 9)
  const rd = sha(rh, data)
  const counts = Buffer.alloc(25)
  counts[0] = 0x45
  counts.writeBigUInt64BE(1n, 1)
  counts.writeBigUInt64BE(1n, 9)
  counts.writeBigUInt64BE(BigInt(BS), 17)
  const stream = Buffer.concat([fixed, json, hd, rh, data, rd, counts, sha(hd, rd, counts)])
  const got = await decodeAll(stream)
  t.equal(got.records.length, 1)
  t.ok(got.records[0].kind === 'data' && got.records[0].data.equals(data))
  t.ok(encode(h, [{ kind: 'data', block: 0, data }]).equals(stream), 'the encoder writes exactly these bytes')
})
