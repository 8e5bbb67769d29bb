// Hand-written protobuf codec of the data path's messages: IoRequest and IoResponse (the Io
// stream) and their batches IoRequestBatch and IoResponseBatch (the IoBatch stream), byte-
// compatible with the generated one. The generic path (@grpc/proto-loader over protobufjs) builds
// an intermediate message object, encodes into a writer and copies the result again, ~80 µs for a
// 128 KiB write; this one sizes the message, writes it into one buffer (one copy of the payload)
// and decodes `data` as a view of the received message (no copy). A batch is encoded into one
// buffer the same way, each request or answer written in place. Unknown fields are skipped,
// absent ones take proto3 defaults. Field numbers must match the .proto;
// test/storagenode-io-codec.test.ts checks both directions against protobufjs.
//
// Every encoded message is allocated with room for gRPC's 5-byte frame header in front of it
// (grpc-frame-room.ts): grpc-js then frames it in place instead of copying it once more.
//
// The message shapes are stated here (wire.ts re-exports them), as @grpc/proto-loader hands them
// over: camelCase fields, uint64 as number, bytes as Buffer, the IoRequest oneof named in `op`.
import { allocWithFrameRoom } from './grpc-frame-room'

// absentMode 1: NOT_FOUND instead of zeros when the block has no version <= epoch.
export interface ReadOp { diskUuid: string, block: number, epoch: number, offset: number, length: number, absentMode?: number }
export interface WriteOp { diskUuid: string, block: number, epoch: number, offset: number, data: Buffer, leaseEpoch: number }
export interface FlushOp { diskUuid: string, leaseEpoch: number }
export interface DiscardOp { diskUuid: string, block: number, epoch: number, offset: number, length: number, leaseEpoch: number }

// What the client sends: exactly one op field set.
export type IoRequestOut =
  | { id: number, read: ReadOp }
  | { id: number, write: WriteOp }
  | { id: number, flush: FlushOp }
  | { id: number, discard: DiscardOp }

// What the server receives: proto-loader fills in every field with defaults and names the set one.
export interface IoRequestIn {
  id: number
  op?: 'read' | 'write' | 'flush' | 'discard'
  read?: ReadOp
  write?: WriteOp
  flush?: FlushOp
  discard?: DiscardOp
}

// incarnation: the node process's id (write, discard and flush answers; see the .proto).
export interface IoResponse { id: number, code: string, message: string, data: Buffer, incarnation?: string }

const WIRE_VARINT = 0
const WIRE_I64 = 1
const WIRE_LEN = 2
const WIRE_I32 = 5
const EMPTY = Buffer.alloc(0)
const OPS = ['read', 'write', 'flush', 'discard'] as const  // IoRequest fields 2..5, in order

// ---- sizes ----

function varintSize (n: number): number {
  let size = 1
  while (n >= 128) { n = Math.floor(n / 128); size++ }
  return size
}

// A field's total size; proto3 omits zero scalars and empty strings/bytes.
function uintField (n: number): number { return n === 0 ? 0 : 1 + varintSize(n) }
function lenField (len: number): number { return len === 0 ? 0 : 1 + varintSize(len) + len }
// An embedded message's field (a batch's element): written even when empty.
function msgField (len: number): number { return 1 + varintSize(len) + len }

// ---- writer ----

class Out {
  pos = 0
  constructor (readonly buf: Buffer) {}
  varint (n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`io codec: ${n} is not an unsigned safe integer`)
    while (n >= 128) { this.buf[this.pos++] = (n % 128) | 128; n = Math.floor(n / 128) }
    this.buf[this.pos++] = n
  }
  uint (field: number, n: number): void {
    if (n === 0) return
    this.buf[this.pos++] = field << 3 | WIRE_VARINT
    this.varint(n)
  }
  bytes (field: number, b: Buffer): void {
    if (b.length === 0) return
    this.buf[this.pos++] = field << 3 | WIRE_LEN
    this.varint(b.length)
    this.buf.set(b, this.pos)
    this.pos += b.length
  }
  header (field: number, len: number): void {
    this.buf[this.pos++] = field << 3 | WIRE_LEN
    this.varint(len)
  }
  check (total: number): Buffer {
    if (this.pos !== total) throw new Error(`io codec: encoded ${this.pos} bytes, sized ${total}`)
    return this.buf
  }
}

// One request, sized: what writing it needs.
interface RequestParts {
  id: number
  field: number       // the op's field number in IoRequest
  uuid: Buffer
  nums: number[]      // the op's varint fields after disk_uuid, by field number 2..
  data: Buffer        // WriteOp.data, field 5
  opLen: number
  total: number       // the encoded IoRequest's size
}

function requestParts (req: IoRequestOut): RequestParts {
  let field: number
  let uuid: Buffer
  let nums: number[]
  let data: Buffer = EMPTY
  if ('read' in req) {
    const r = req.read
    field = 2; uuid = Buffer.from(r.diskUuid); nums = [r.block, r.epoch, r.offset, r.length, r.absentMode ?? 0]
  } else if ('write' in req) {
    const w = req.write
    field = 3; uuid = Buffer.from(w.diskUuid); nums = [w.block, w.epoch, w.offset, 0, w.leaseEpoch]; data = w.data
  } else if ('flush' in req) {
    field = 4; uuid = Buffer.from(req.flush.diskUuid); nums = [req.flush.leaseEpoch]
  } else {
    const d = req.discard
    field = 5; uuid = Buffer.from(d.diskUuid); nums = [d.block, d.epoch, d.offset, d.length, d.leaseEpoch]
  }
  let opLen = lenField(uuid.length) + lenField(data.length)
  for (const n of nums) opLen += uintField(n)
  return { id: req.id, field, uuid, nums, data, opLen, total: uintField(req.id) + msgField(opLen) }
}

function writeRequest (out: Out, p: RequestParts): void {
  out.uint(1, p.id)
  out.header(p.field, p.opLen)
  out.bytes(1, p.uuid)
  for (let i = 0; i < p.nums.length; i++) {
    if (p.field === 3 && i === 3) out.bytes(5, p.data)  // WriteOp: data is field 5 between offset and lease_epoch
    else out.uint(i + 2, p.nums[i])
  }
}

export function encodeIoRequest (req: IoRequestOut): Buffer {
  const p = requestParts(req)
  const out = new Out(allocWithFrameRoom(p.total))
  writeRequest(out, p)
  return out.check(p.total)
}

// IoRequestBatch: `requests` (field 1), in order.
export function encodeIoRequestBatch (reqs: readonly IoRequestOut[]): Buffer {
  return encodeBatch(reqs.map(requestParts), writeRequest)
}

// A batch message: each item as a length-delimited field 1, in order.
function encodeBatch<P extends { total: number }> (parts: readonly P[], write: (out: Out, p: P) => void): Buffer {
  let total = 0
  for (const p of parts) total += msgField(p.total)
  const out = new Out(allocWithFrameRoom(total))
  for (const p of parts) {
    out.header(1, p.total)
    write(out, p)
  }
  return out.check(total)
}

interface ResponseParts { r: IoResponse, code: Buffer, message: Buffer, data: Buffer, incarnation: Buffer, total: number }

function responseParts (r: IoResponse): ResponseParts {
  const code = r.code === '' ? EMPTY : Buffer.from(r.code)
  const message = r.message === '' ? EMPTY : Buffer.from(r.message)
  const data = r.data ?? EMPTY
  const incarnation = r.incarnation === undefined || r.incarnation === '' ? EMPTY : Buffer.from(r.incarnation)
  return { r, code, message, data, incarnation, total: uintField(r.id) + lenField(code.length) + lenField(message.length) + lenField(data.length) + lenField(incarnation.length) }
}

function writeResponse (out: Out, p: ResponseParts): void {
  out.uint(1, p.r.id)
  out.bytes(2, p.code)
  out.bytes(3, p.message)
  out.bytes(4, p.data)
  out.bytes(5, p.incarnation)
}

export function encodeIoResponse (r: IoResponse): Buffer {
  const p = responseParts(r)
  const out = new Out(allocWithFrameRoom(p.total))
  writeResponse(out, p)
  return out.check(p.total)
}

// IoResponseBatch: `responses` (field 1).
export function encodeIoResponseBatch (rs: readonly IoResponse[]): Buffer {
  return encodeBatch(rs.map(responseParts), writeResponse)
}

// ---- reader ----

class In {
  pos: number
  constructor (readonly buf: Buffer, start: number, readonly end: number) { this.pos = start }
  get more (): boolean { return this.pos < this.end }
  varint (): number {
    let n = 0
    let scale = 1
    for (;;) {
      if (this.pos >= this.end) throw new RangeError('io codec: truncated varint')
      const b = this.buf[this.pos++]
      n += (b & 127) * scale
      if (b < 128) break
      scale *= 128
      if (scale > 2 ** 63) throw new RangeError('io codec: varint too long')
    }
    return n
  }
  // Returns [start, end) of a length-delimited field's contents.
  span (): [number, number] {
    const len = this.varint()
    const start = this.pos
    if (start + len > this.end) throw new RangeError('io codec: truncated field')
    this.pos += len
    return [start, start + len]
  }
  skip (wire: number): void {
    if (wire === WIRE_VARINT) this.varint()
    else if (wire === WIRE_LEN) this.span()
    else if (wire === WIRE_I64) this.pos += 8
    else if (wire === WIRE_I32) this.pos += 4
    else throw new RangeError(`io codec: unsupported wire type ${wire}`)
    if (this.pos > this.end) throw new RangeError('io codec: truncated field')
  }
}

type OpFields = Record<string, unknown> & { diskUuid: string }

function decodeOp (buf: Buffer, start: number, end: number, op: typeof OPS[number]): OpFields {
  const names: Record<number, string> = op === 'flush'
    ? { 2: 'leaseEpoch' }
    : { 2: 'block', 3: 'epoch', 4: 'offset', 5: op === 'write' ? 'data' : 'length', 6: op === 'read' ? 'absentMode' : 'leaseEpoch' }
  const o: OpFields = { diskUuid: '' }
  for (const n of Object.values(names)) o[n] = n === 'data' ? EMPTY : 0
  const r = new In(buf, start, end)
  while (r.more) {
    const tag = r.varint()
    const fieldNo = Math.floor(tag / 8)
    const wire = tag & 7
    const name = fieldNo === 1 ? 'diskUuid' : names[fieldNo]
    if (name === undefined || (name in o) === false) { r.skip(wire); continue }
    if (name === 'diskUuid' || name === 'data') {
      if (wire !== WIRE_LEN) { r.skip(wire); continue }
      const [s, e] = r.span()
      ;(o as Record<string, unknown>)[name] = name === 'data' ? r.buf.subarray(s, e) : r.buf.toString('utf8', s, e)
    } else {
      if (wire !== WIRE_VARINT) { r.skip(wire); continue }
      o[name] = r.varint()
    }
  }
  return o
}

function decodeRequestAt (buf: Buffer, start: number, end: number): IoRequestIn {
  const inp = new In(buf, start, end)
  const req: IoRequestIn = { id: 0 }
  while (inp.more) {
    const tag = inp.varint()
    const fieldNo = Math.floor(tag / 8)
    const wire = tag & 7
    if (fieldNo === 1 && wire === WIRE_VARINT) { req.id = inp.varint(); continue }
    const op = fieldNo >= 2 && fieldNo <= 5 ? OPS[fieldNo - 2] : undefined
    if (op === undefined || wire !== WIRE_LEN) { inp.skip(wire); continue }
    const [s, e] = inp.span()
    // oneof: the last one on the wire wins, as in protobuf.
    if (req.op !== undefined) delete req[req.op]
    req.op = op
    ;(req as unknown as Record<string, unknown>)[op] = decodeOp(buf, s, e, op)
  }
  return req
}

export function decodeIoRequest (buf: Buffer): IoRequestIn {
  return decodeRequestAt(buf, 0, buf.length)
}

function decodeResponseAt (buf: Buffer, start: number, end: number): IoResponse {
  const inp = new In(buf, start, end)
  const r: IoResponse = { id: 0, code: '', message: '', data: EMPTY, incarnation: '' }
  while (inp.more) {
    const tag = inp.varint()
    const fieldNo = Math.floor(tag / 8)
    const wire = tag & 7
    if (fieldNo === 1 && wire === WIRE_VARINT) r.id = inp.varint()
    else if (fieldNo >= 2 && fieldNo <= 5 && wire === WIRE_LEN) {
      const [s, e] = inp.span()
      if (fieldNo === 2) r.code = buf.toString('utf8', s, e)
      else if (fieldNo === 3) r.message = buf.toString('utf8', s, e)
      else if (fieldNo === 4) r.data = buf.subarray(s, e)
      else r.incarnation = buf.toString('utf8', s, e)
    } else inp.skip(wire)
  }
  return r
}

export function decodeIoResponse (buf: Buffer): IoResponse {
  return decodeResponseAt(buf, 0, buf.length)
}

// The elements (field 1, embedded messages) of a batch, each decoded in place.
function decodeRepeated<T> (buf: Buffer, element: (buf: Buffer, start: number, end: number) => T): T[] {
  const inp = new In(buf, 0, buf.length)
  const out: T[] = []
  while (inp.more) {
    const tag = inp.varint()
    if (tag !== (1 << 3 | WIRE_LEN)) { inp.skip(tag & 7); continue }
    const [s, e] = inp.span()
    out.push(element(buf, s, e))
  }
  return out
}

export function decodeIoRequestBatch (buf: Buffer): IoRequestIn[] { return decodeRepeated(buf, decodeRequestAt) }
export function decodeIoResponseBatch (buf: Buffer): IoResponse[] { return decodeRepeated(buf, decodeResponseAt) }
