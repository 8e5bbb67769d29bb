// Client of one storage node. Data operations share one lazily opened bidirectional Io stream with
// at most `windowSize` requests in flight; further requests wait in a bounded queue. Every request
// has a deadline; a broken stream fails what was in flight and is reopened on next use. gRPC
// status and response codes become UkaiErrors here, the boundary that owns them.
import * as grpc from '@grpc/grpc-js'
import { UkaiError, UkaiErrorCode } from '../errors'
import {
  BlockEpochs, BlockVersion, CopyBaseRequest, CopyBaseResponse, ERROR_CODE_METADATA_KEY, IoRequestOut, IoResponse, LocateBlockRequest, LocateBlockResponse, MAX_IO_BYTES,
  MAX_MESSAGE_BYTES, PullBlockRequest, StatResponse, storageService
} from './wire'

// A pull copies a whole block (up to 64 MiB, every version), possibly across a slow link.
const PULL_TIMEOUT_MS = 120_000
const WINDOW_SIZE_DEFAULT = 32
const CALL_TIMEOUT_MS_DEFAULT = 10_000
const MAX_QUEUED_DEFAULT = 1024
// Detect a dead peer on an idle connection within ~15 s; the per-request deadline covers busy ones.
const KEEPALIVE_TIME_MS = 10_000
const KEEPALIVE_TIMEOUT_MS = 5_000
const RECONNECT_BACKOFF_MAX_MS = 2_000
// HTTP/2's default 64 KiB receive window stalls a stream of 128 KiB+ responses on every message.
const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024

export interface StorageClientOptions {
  nodeId: string
  address: string        // host:port
  windowSize?: number    // requests in flight on the Io stream
  callTimeoutMs?: number // deadline of every request, queueing included
  maxQueued?: number     // requests waiting for the window before new ones are refused
}

export interface BlockRef { diskUuid: string, block: number, epoch: number }
export interface ReadArgs extends BlockRef { offset: number, length: number, absentNotFound?: boolean }
export interface WriteArgs extends BlockRef { offset: number, data: Buffer, leaseEpoch: number }
export interface DiscardArgs extends BlockRef { offset: number, length: number, leaseEpoch: number }
export interface FlushArgs { diskUuid: string, leaseEpoch: number }
export type { BlockEpochs, BlockVersion, LocateBlockResponse, StatResponse }

interface Pending {
  id: number
  req: IoRequestOut
  resolve: (r: IoResponse) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
  sent: boolean
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void
type UnaryMethod = (req: unknown, opts: grpc.CallOptions, cb: Callback<unknown>) => grpc.ClientUnaryCall

const CODE_OF_STATUS: Partial<Record<grpc.status, UkaiErrorCode>> = {
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
  [grpc.status.DEADLINE_EXCEEDED]: 'UNAVAILABLE',
  [grpc.status.CANCELLED]: 'UNAVAILABLE',
  [grpc.status.INVALID_ARGUMENT]: 'BAD_ARGUMENT',
  [grpc.status.RESOURCE_EXHAUSTED]: 'BAD_ARGUMENT',  // without an ukai-code: a message over the size limit
  [grpc.status.NOT_FOUND]: 'NOT_FOUND',
  [grpc.status.FAILED_PRECONDITION]: 'FENCED',
  [grpc.status.OUT_OF_RANGE]: 'OUT_OF_RANGE',
  [grpc.status.INTERNAL]: 'IO_ERROR'
}

export class StorageClient {
  readonly nodeId: string
  readonly address: string
  readonly windowSize: number
  readonly callTimeoutMs: number
  private readonly maxQueued: number
  private readonly grpcClient: grpc.Client
  private stream: grpc.ClientDuplexStream<IoRequestOut, IoResponse> | undefined
  private readonly sent = new Map<number, Pending>()
  private queue: Pending[] = []
  private nextId = 1
  private closed = false

  constructor (opts: StorageClientOptions) {
    this.nodeId = opts.nodeId
    this.address = opts.address
    this.windowSize = opts.windowSize ?? WINDOW_SIZE_DEFAULT
    this.callTimeoutMs = opts.callTimeoutMs ?? CALL_TIMEOUT_MS_DEFAULT
    this.maxQueued = opts.maxQueued ?? MAX_QUEUED_DEFAULT
    if (!Number.isInteger(this.windowSize) || this.windowSize < 1) throw UkaiError.badArgument(`windowSize must be a positive integer, got ${this.windowSize}`)
    if (!(this.callTimeoutMs > 0)) throw UkaiError.badArgument(`callTimeoutMs must be positive, got ${this.callTimeoutMs}`)
    const Service = storageService()
    this.grpcClient = new Service(this.address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_reconnect_backoff_ms': RECONNECT_BACKOFF_MAX_MS,
      'grpc.enable_retries': 0,
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES
    })
  }

  // Requests sent and not yet answered (for metrics); queued ones are not counted.
  get inFlight (): number { return this.sent.size }
  get queued (): number { return this.queue.length }

  async read (a: ReadArgs): Promise<Buffer> {
    const r = await this.io({ id: 0, read: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, length: a.length, absentMode: a.absentNotFound === true ? 1 : 0 } })
    if (r.data.length !== a.length) throw UkaiError.io(`${this.nodeId}: read returned ${r.data.length} bytes, ${a.length} requested`)
    return r.data
  }

  async write (a: WriteArgs): Promise<void> {
    // Checked here as well: an oversized message would break the whole stream, not just this call.
    if (a.data.length > MAX_IO_BYTES) throw UkaiError.badArgument(`${this.nodeId}: write of ${a.data.length} bytes exceeds the limit of ${MAX_IO_BYTES} bytes per request`)
    await this.io({ id: 0, write: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, data: a.data, leaseEpoch: a.leaseEpoch } })
  }

  async flush (a: FlushArgs): Promise<void> {
    await this.io({ id: 0, flush: { diskUuid: a.diskUuid, leaseEpoch: a.leaseEpoch } })
  }

  async discard (a: DiscardArgs): Promise<void> {
    await this.io({ id: 0, discard: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, length: a.length, leaseEpoch: a.leaseEpoch } })
  }

  // Returns the disk's minimum lease epoch after the call (never lower than before).
  async fence (a: { diskUuid: string, leaseEpoch: number }): Promise<number> {
    const r = await this.unary<{ leaseEpoch: number }>('Fence', a)
    return r.leaseEpoch
  }

  async blockInfo (a: { diskUuid: string, block: number }): Promise<BlockVersion[]> {
    return (await this.unary<{ versions: BlockVersion[] }>('BlockInfo', a)).versions
  }

  async listBlocks (a: { diskUuid: string }): Promise<BlockEpochs[]> {
    return (await this.unary<{ blocks: BlockEpochs[] }>('ListBlocks', a)).blocks
  }

  // Returns the bytes freed.
  async deleteDisk (a: { diskUuid: string }): Promise<number> {
    return (await this.unary<{ freedBytes: number }>('DeleteDisk', a)).freedBytes
  }

  async deleteBlocks (a: { diskUuid: string, blocks: number[] }): Promise<number> {
    return (await this.unary<{ freedBytes: number }>('DeleteBlocks', a)).freedBytes
  }

  // Asks this node to pull a block's versions from another node (node-to-node copy).
  // Its deadline covers a whole block at WAN speed, not one small request.
  // With `probe` the node only reads the block from the source (a link measurement): it returns
  // the bytes read and stores nothing.
  async pullBlock (a: PullBlockRequest, timeoutMs = PULL_TIMEOUT_MS): Promise<number> {
    return (await this.unary<{ bytes: number }>('PullBlock', a, timeoutMs)).bytes
  }

  // Drops the disk's versions that no kept epoch needs (see the .proto); returns what it freed.
  async pruneVersions (a: { diskUuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number }): Promise<{ freedBytes: number, versionsRemoved: number }> {
    return await this.unary<{ freedBytes: number, versionsRemoved: number }>('PruneVersions', a, PULL_TIMEOUT_MS)
  }

  // Copy-on-write of a clone's block from its parent (locally or pulled from sourceNode).
  async copyBase (a: CopyBaseRequest): Promise<CopyBaseResponse> {
    return await this.unary<CopyBaseResponse>('CopyBase', a, PULL_TIMEOUT_MS)
  }

  // Which file holds the version a read of (block, epoch) returns (short-circuit reads). Cheap on
  // the node (in memory); callers pass a short deadline and fall back to reading over gRPC.
  async locateBlock (a: LocateBlockRequest, timeoutMs = this.callTimeoutMs): Promise<LocateBlockResponse> {
    return await this.unary<LocateBlockResponse>('LocateBlock', a, timeoutMs)
  }

  async stat (): Promise<StatResponse> {
    return await this.unary<StatResponse>('Stat', {})
  }

  // Fails everything pending with UNAVAILABLE and closes the channel. Idempotent.
  close (): void {
    if (this.closed) return
    this.closed = true
    const err = (): UkaiError => UkaiError.unavailable(`${this.nodeId}: client to ${this.address} closed`)
    for (const p of this.queue) this.settle(p, err())
    this.queue = []
    for (const p of [...this.sent.values()]) this.settle(p, err())
    const s = this.stream
    this.stream = undefined
    if (s !== undefined) s.cancel()
    this.grpcClient.close()
  }

  // ---- Io stream ----

  private async io (req: IoRequestOut): Promise<IoResponse> {
    if (this.closed) throw UkaiError.unavailable(`${this.nodeId}: client to ${this.address} is closed`)
    if (this.queue.length >= this.maxQueued) {
      throw UkaiError.unavailable(`${this.nodeId} (${this.address}): ${this.queue.length} requests already queued`)
    }
    const id = this.nextId++
    req.id = id
    const resp = await new Promise<IoResponse>((resolve, reject) => {
      const p: Pending = { id, req, resolve, reject, timer: undefined as unknown as NodeJS.Timeout, sent: false }
      p.timer = setTimeout(() => this.onTimeout(p), this.callTimeoutMs)
      this.queue.push(p)
      this.pump()
    })
    if (resp.code !== '') throw new UkaiError(resp.code as UkaiErrorCode, `${this.nodeId}: ${resp.message}`)
    return resp
  }

  private pump (): void {
    while (this.sent.size < this.windowSize && this.queue.length > 0 && !this.closed) {
      const p = this.queue.shift() as Pending
      const s = this.stream ?? this.openStream()
      p.sent = true
      this.sent.set(p.id, p)
      s.write(p.req)
    }
  }

  private openStream (): grpc.ClientDuplexStream<IoRequestOut, IoResponse> {
    const s = (this.grpcClient as unknown as { Io: () => grpc.ClientDuplexStream<IoRequestOut, IoResponse> }).Io()
    this.stream = s
    s.on('data', (resp: IoResponse) => {
      const p = this.sent.get(resp.id)
      if (p === undefined) return  // answered after its deadline
      this.sent.delete(resp.id)
      clearTimeout(p.timer)
      p.resolve(resp)
      this.pump()
    })
    const broken = (why: string): void => {
      if (this.stream !== s) return
      this.stream = undefined
      for (const p of [...this.sent.values()]) {
        this.settle(p, UkaiError.unavailable(`${this.nodeId} (${this.address}): stream broke: ${why}`))
      }
      this.pump()  // queued requests get a fresh stream
    }
    s.on('error', (err: grpc.ServiceError) => broken(err.details ?? err.message))
    s.on('end', () => broken('server ended the stream'))
    s.on('close', () => broken('stream closed'))
    return s
  }

  private onTimeout (p: Pending): void {
    if (p.sent) {
      if (this.sent.get(p.id) !== p) return
    } else {
      const i = this.queue.indexOf(p)
      if (i < 0) return
      this.queue.splice(i, 1)
    }
    const op = Object.keys(p.req).find(k => k !== 'id') ?? 'io'
    this.settle(p, UkaiError.unavailable(`${this.nodeId} (${this.address}) did not answer a ${op} within ${this.callTimeoutMs} ms`))
    this.pump()
  }

  private settle (p: Pending, err: Error): void {
    clearTimeout(p.timer)
    this.sent.delete(p.id)
    p.reject(err)
  }

  // ---- unary ----

  private async unary<Res> (method: string, req: unknown, timeoutMs = this.callTimeoutMs): Promise<Res> {
    if (this.closed) throw UkaiError.unavailable(`${this.nodeId}: client to ${this.address} is closed`)
    const fn = (this.grpcClient as unknown as Record<string, UnaryMethod>)[method].bind(this.grpcClient)
    return await new Promise<Res>((resolve, reject) => {
      fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err !== null) reject(this.translate(err, method))
        else resolve(res as Res)
      })
    })
  }

  private translate (err: grpc.ServiceError, method: string): UkaiError {
    const ukaiCode = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0]
    if (typeof ukaiCode === 'string' && ukaiCode !== '') return new UkaiError(ukaiCode as UkaiErrorCode, `${this.nodeId}: ${err.details}`, err)
    const code = CODE_OF_STATUS[err.code] ?? 'IO_ERROR'
    if (code === 'UNAVAILABLE') {
      return UkaiError.unavailable(`${this.nodeId} (${this.address}): ${method} failed: ${err.details} (${grpc.status[err.code]})`, err)
    }
    return new UkaiError(code, `${this.nodeId} (${this.address}): ${method}: ${err.details}`, err)
  }
}
