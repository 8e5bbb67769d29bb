// The only module that knows the storage protocol's message shapes. It loads
// proto/ukai/storage/v1/storage.proto at runtime and states, by hand, the TS shape of every
// message as @grpc/proto-loader hands it over (camelCase fields, uint64 as number, bytes as Buffer,
// the IoRequest oneof named in `op`).
import * as path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { packageRoot } from '../package-root'

// A request or response carries at most one 4 MiB payload; 8 MiB leaves ample room for framing.
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024
export const MAX_IO_BYTES = 4 * 1024 * 1024
// Name of the trailer that carries the UkaiError code of a failed unary call.
export const ERROR_CODE_METADATA_KEY = 'ukai-code'

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

export interface IoResponse { id: number, code: string, message: string, data: Buffer }

export interface FenceRequest { diskUuid: string, leaseEpoch: number }
export interface FenceResponse { leaseEpoch: number }
export interface BlockInfoRequest { diskUuid: string, block: number }
export interface BlockVersion { epoch: number, allocatedBytes: number, sizeBytes: number }
export interface BlockInfoResponse { versions: BlockVersion[] }
export interface ListBlocksRequest { diskUuid: string }
export interface BlockEpochs { block: number, epochs: number[] }
export interface ListBlocksResponse { blocks: BlockEpochs[] }
export interface DeleteDiskRequest { diskUuid: string, leaseEpoch: number }
export interface DeleteDiskResponse { freedBytes: number }
export interface DeleteBlocksRequest { diskUuid: string, blocks: number[] }
export interface DeleteBlocksResponse { freedBytes: number }
export interface PullBlockRequest { diskUuid: string, block: number, sourceNode: string, sourceAddress: string, leaseEpoch: number, probe?: boolean }
export interface PullBlockResponse { bytes: number }
export interface PruneVersionsRequest { diskUuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number }
export interface PruneVersionsResponse { freedBytes: number, versionsRemoved: number }
export interface CopyBaseRequest { diskUuid: string, block: number, epoch: number, baseUuid: string, baseEpoch: number, sourceNode: string, sourceAddress: string, leaseEpoch: number }
export type CopyBaseResult = 'present' | 'copied' | 'absent'
export interface CopyBaseResponse { result: CopyBaseResult, bytes: number }
export interface LocateBlockRequest { diskUuid: string, block: number, epoch: number }
export interface LocateBlockResponse { found: boolean, epoch: number, path: string }
export type StatRequest = Record<string, never>
// The Io stream memory accounting (io-budget.ts) a node reports in Stat.
export interface IoBudgetStat {
  ioHeldBytes: number       // charged to Io requests now (admitted, reply not yet sent)
  ioHeldPeakBytes: number   // the most charged at once since the node started
  ioBudgetBytes: number     // the node's Io memory budget
  ioWaitingStreams: number  // streams whose next request waits for the node budget
}

export interface StatResponse extends IoBudgetStat { nodeId: string, capacityBytes: number, usedBytes: number, freeBytes: number, fsyncCount: number }
export interface ScrubRequest { diskUuid: string, digests: boolean }
export interface ScrubFinding { diskUuid: string, block: number, epoch: number, page: number, foundAtMs: number }
export interface ScrubDigest { block: number, epoch: number, digest: number }
export interface ScrubResponse {
  versionsChecked: number
  bytesChecked: number
  adopted: number
  bad: ScrubFinding[]
  digests: ScrubDigest[]
  passes: number           // background passes completed since the node started
  lastPassEndMs: number
}
export type PingRequest = Record<string, never>
export type PingResponse = Record<string, never>

// Server handler names in the shape grpc-js expects (method names as in the .proto).
export interface StorageHandlers extends grpc.UntypedServiceImplementation {
  Io: grpc.handleBidiStreamingCall<IoRequestIn, IoResponse>
  Fence: grpc.handleUnaryCall<FenceRequest, FenceResponse>
  BlockInfo: grpc.handleUnaryCall<BlockInfoRequest, BlockInfoResponse>
  ListBlocks: grpc.handleUnaryCall<ListBlocksRequest, ListBlocksResponse>
  DeleteDisk: grpc.handleUnaryCall<DeleteDiskRequest, DeleteDiskResponse>
  DeleteBlocks: grpc.handleUnaryCall<DeleteBlocksRequest, DeleteBlocksResponse>
  Stat: grpc.handleUnaryCall<StatRequest, StatResponse>
  PullBlock: grpc.handleUnaryCall<PullBlockRequest, PullBlockResponse>
  PruneVersions: grpc.handleUnaryCall<PruneVersionsRequest, PruneVersionsResponse>
  CopyBase: grpc.handleUnaryCall<CopyBaseRequest, CopyBaseResponse>
  LocateBlock: grpc.handleUnaryCall<LocateBlockRequest, LocateBlockResponse>
  Ping: grpc.handleUnaryCall<PingRequest, PingResponse>
  Scrub: grpc.handleUnaryCall<ScrubRequest, ScrubResponse>
}

export const PROTO_RELATIVE_PATH = path.join('proto', 'ukai', 'storage', 'v1', 'storage.proto')

function findProtoFile (): string {
  return path.join(packageRoot(), PROTO_RELATIVE_PATH)
}

let cached: grpc.ServiceClientConstructor | undefined

// The generated service: `.service` is the definition for server.addService, `new` makes a client.
export function storageService (): grpc.ServiceClientConstructor {
  if (cached !== undefined) return cached
  const def = protoLoader.loadSync(findProtoFile(), { keepCase: false, longs: Number, defaults: true, oneofs: true })
  // The Io stream's messages go through the hand-written codec (same bytes, fewer copies).
  const io = (def['ukai.storage.v1.Storage'] as protoLoader.ServiceDefinition).Io as protoLoader.MethodDefinition<IoRequestOut, IoResponse, IoRequestIn, IoResponse>
  io.requestSerialize = encodeIoRequest
  io.requestDeserialize = decodeIoRequest
  io.responseSerialize = encodeIoResponse
  io.responseDeserialize = decodeIoResponse
  const pkg = grpc.loadPackageDefinition(def) as unknown as { ukai: { storage: { v1: { Storage: grpc.ServiceClientConstructor } } } }
  cached = pkg.ukai.storage.v1.Storage
  return cached
}

// ---- Io codec ----
// Hand-written protobuf codec of the Io stream's two messages (IoRequest, IoResponse), byte-
// compatible with the generated one. The generic path (@grpc/proto-loader over protobufjs) builds
// an intermediate message object, encodes into a writer and copies the result again, ~80 µs for a
// 128 KiB write; this one sizes the message, writes it into one buffer (one copy of the payload)
// and decodes `data` as a view of the received message (no copy). Unknown fields are skipped,
// absent ones take proto3 defaults. Field numbers must match the .proto;
// test/storagenode-io-codec.test.ts checks both directions against protobufjs.

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
}

export function encodeIoRequest (req: IoRequestOut): Buffer {
  let field: number
  let uuid: Buffer
  let nums: number[]        // the op's varint fields after disk_uuid, by field number 2..
  let data: Buffer = EMPTY  // WriteOp.data, field 5
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
  const total = uintField(req.id) + 1 + varintSize(opLen) + opLen
  const out = new Out(Buffer.allocUnsafe(total))
  out.uint(1, req.id)
  out.header(field, opLen)
  out.bytes(1, uuid)
  for (let i = 0; i < nums.length; i++) {
    if (field === 3 && i === 3) out.bytes(5, data)  // WriteOp: data is field 5 between offset and lease_epoch
    else out.uint(i + 2, nums[i])
  }
  if (out.pos !== total) throw new Error(`io codec: encoded ${out.pos} bytes, sized ${total}`)
  return out.buf
}

export function encodeIoResponse (r: IoResponse): Buffer {
  const code = r.code === '' ? EMPTY : Buffer.from(r.code)
  const message = r.message === '' ? EMPTY : Buffer.from(r.message)
  const data = r.data ?? EMPTY
  const total = uintField(r.id) + lenField(code.length) + lenField(message.length) + lenField(data.length)
  const out = new Out(Buffer.allocUnsafe(total))
  out.uint(1, r.id)
  out.bytes(2, code)
  out.bytes(3, message)
  out.bytes(4, data)
  if (out.pos !== total) throw new Error(`io codec: encoded ${out.pos} bytes, sized ${total}`)
  return out.buf
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

function decodeOp (inp: In, start: number, end: number, op: typeof OPS[number]): OpFields {
  const names: Record<number, string> = op === 'flush'
    ? { 2: 'leaseEpoch' }
    : { 2: 'block', 3: 'epoch', 4: 'offset', 5: op === 'write' ? 'data' : 'length', 6: op === 'read' ? 'absentMode' : 'leaseEpoch' }
  const o: OpFields = { diskUuid: '' }
  for (const n of Object.values(names)) o[n] = n === 'data' ? EMPTY : 0
  const r = new In(inp.buf, start, end)
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

export function decodeIoRequest (buf: Buffer): IoRequestIn {
  const inp = new In(buf, 0, buf.length)
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
    ;(req as unknown as Record<string, unknown>)[op] = decodeOp(inp, s, e, op)
  }
  return req
}

export function decodeIoResponse (buf: Buffer): IoResponse {
  const inp = new In(buf, 0, buf.length)
  const r: IoResponse = { id: 0, code: '', message: '', data: EMPTY }
  while (inp.more) {
    const tag = inp.varint()
    const fieldNo = Math.floor(tag / 8)
    const wire = tag & 7
    if (fieldNo === 1 && wire === WIRE_VARINT) r.id = inp.varint()
    else if (fieldNo >= 2 && fieldNo <= 4 && wire === WIRE_LEN) {
      const [s, e] = inp.span()
      if (fieldNo === 2) r.code = buf.toString('utf8', s, e)
      else if (fieldNo === 3) r.message = buf.toString('utf8', s, e)
      else r.data = buf.subarray(s, e)
    } else inp.skip(wire)
  }
  return r
}
