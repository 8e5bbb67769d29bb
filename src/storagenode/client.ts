// Client of one storage node. Data operations share one lazily opened bidirectional IoBatch stream
// with at most `windowSize` requests in flight; further requests wait in a bounded queue. Every
// request has a deadline; a broken stream fails what was in flight and is reopened on next use.
// gRPC status and response codes become UkaiErrors here, the boundary that owns them.
//
// Batching: requests queued during one event-loop turn leave together, as one IoRequestBatch
// message (closed at IO_BATCH_BYTES of payload), in call order; the node answers with batches
// too. grpc-js and HTTP/2 cost about the same per message whatever it carries, so this divides
// the per-write framing cost by the batch (docs/architecture.md "Batched replica writes").
// Measured (bench/write-cpu.ts, interleaved with the unbatched client, medians of 3): the agent's
// CPU per replicated 4 KiB write 225 → 121 µs at 4 in flight (0.54), 150 → 73 µs at 16 (0.49),
// unchanged at 1 (388 → 419 µs, noise); this client alone 0.56 / 0.37 (bench/storage-stream.ts).
//
// Hung nodes: the watchdog in node-progress.ts (a node silent with requests outstanding fails
// them at once instead of after their deadline).
import * as grpc from '@grpc/grpc-js'
import { UkaiError, UkaiErrorCode, isUkaiError } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { traceWrite, writeTraceOn } from '../lib/write-trace'
import { codeOfServiceError, codeOfStatus, trailerCode } from './status'
import { HungWatchdog, NodeProgress, PING_TIMEOUT_MS, REPLICA_HUNG_MS_DEFAULT, REPLICA_HUNG_MS_MIN } from './node-progress'
import { ClientTls, channelOf, clientTls } from './tls'
import {
  BlockEpochs, BlockVersion, CopyBaseRequest, CopyBaseResponse, IO_BATCH_BYTES, IoRequestOut, IoResponse, LocateBlockRequest, LocateBlockResponse, MAX_IO_BYTES,
  MAX_MESSAGE_BYTES, PullBlockRequest, ScrubRequest, ScrubResponse, StatResponse, storageService
} from './wire'

// A pull copies a whole block (up to 64 MiB, every version), possibly across a slow link.
const PULL_TIMEOUT_MS = 120_000
// A scrub of one disk on one node reads every byte it holds of it (~1 GB/s from the page cache,
// disk speed otherwise): 10 minutes covers hundreds of GB.
const SCRUB_TIMEOUT_MS = 600_000
const WINDOW_SIZE_DEFAULT = 32
const CALL_TIMEOUT_MS_DEFAULT = 10_000
const MAX_QUEUED_DEFAULT = 1024
// Detect a dead peer on an idle connection within ~15 s; the per-request deadline covers busy ones.
const KEEPALIVE_TIME_MS = 10_000
const KEEPALIVE_TIMEOUT_MS = 5_000
const RECONNECT_BACKOFF_MAX_MS = 2_000
// HTTP/2's default 64 KiB receive window stalls a stream of 128 KiB+ responses on every message.
// Both ends: the server's sessions take the same window (server.ts tuneServerSessions).
export const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024

export interface StorageClientOptions {
  nodeId: string
  address: string        // host:port
  windowSize?: number    // requests in flight on the Io stream
  callTimeoutMs?: number // deadline of every request, queueing included
  maxQueued?: number     // requests waiting for the window before new ones are refused
  hungAfterMs?: number   // silence with requests outstanding before the node counts as hung
  progress?: NodeProgress // shared by the clients of one node; one of its own when absent
  tls?: ClientTls         // how to connect; the process's setting (tls.ts setClientTls) when absent
}

export interface BlockRef { diskUuid: string, block: number, epoch: number }
export interface ReadArgs extends BlockRef { offset: number, length: number, absentNotFound?: boolean }
export interface WriteArgs extends BlockRef { offset: number, data: Buffer, leaseEpoch: number }
export interface DiscardArgs extends BlockRef { offset: number, length: number, leaseEpoch: number }
export interface FlushArgs { diskUuid: string, leaseEpoch: number }
export type { BlockEpochs, BlockVersion, LocateBlockResponse, ScrubResponse, StatResponse }
export { NodeProgress, REPLICA_HUNG_MS_DEFAULT, REPLICA_HUNG_MS_MIN }

interface Pending {
  id: number
  req: IoRequestOut
  resolve: (r: IoResponse) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
  sent: boolean
  sentAtMs: number
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void
type UnaryMethod = (req: unknown, opts: grpc.CallOptions, cb: Callback<unknown>) => grpc.ClientUnaryCall

export class StorageClient {
  readonly nodeId: string
  readonly address: string
  readonly windowSize: number
  readonly callTimeoutMs: number
  private readonly maxQueued: number
  private readonly grpcClient: grpc.Client
  private stream: grpc.ClientDuplexStream<IoRequestOut[], IoResponse[]> | undefined
  private pumpScheduled = false
  private readonly sent = new Map<number, Pending>()
  private queue: Pending[] = []
  private nextId = 1
  private closed = false
  readonly hungAfterMs: number
  readonly progress: NodeProgress
  private readonly watchdog: HungWatchdog
  // Unary calls in flight (Ping excluded) and when they started: they count as outstanding too
  // (a clone's CopyBase, a Fence), and are cancelled when the node is found hung.
  private readonly unaryInFlight = new Map<grpc.ClientUnaryCall, number>()
  // Long calls in flight (PullBlock, a disk's Scrub, PruneVersions): never the reason a node is
  // found hung; cancelled only when it stays hung (LONG_CALL_HUNG_CANCEL_MS).
  private readonly longInFlight = new Set<grpc.ClientUnaryCall>()
  private readonly unsubscribe: () => void

  constructor (opts: StorageClientOptions) {
    this.nodeId = opts.nodeId
    this.address = opts.address
    this.windowSize = opts.windowSize ?? WINDOW_SIZE_DEFAULT
    this.callTimeoutMs = opts.callTimeoutMs ?? CALL_TIMEOUT_MS_DEFAULT
    this.maxQueued = opts.maxQueued ?? MAX_QUEUED_DEFAULT
    if (!Number.isInteger(this.windowSize) || this.windowSize < 1) throw UkaiError.badArgument(`windowSize must be a positive integer, got ${this.windowSize}`)
    if (!(this.callTimeoutMs > 0)) throw UkaiError.badArgument(`callTimeoutMs must be positive, got ${this.callTimeoutMs}`)
    this.hungAfterMs = opts.hungAfterMs ?? REPLICA_HUNG_MS_DEFAULT
    if (!(this.hungAfterMs >= REPLICA_HUNG_MS_MIN)) throw UkaiError.badArgument(`hungAfterMs must be at least ${REPLICA_HUNG_MS_MIN}, got ${this.hungAfterMs}`)
    this.progress = opts.progress ?? new NodeProgress()
    this.unsubscribe = this.progress.subscribe((why) => this.failAll(why))
    this.watchdog = new HungWatchdog(this.progress, this.hungAfterMs, {
      oldestOwedAtMs: () => {
        let oldest: number | null = null
        for (const q of this.sent.values()) oldest = Math.min(oldest ?? q.sentAtMs, q.sentAtMs)
        for (const atMs of this.unaryInFlight.values()) oldest = Math.min(oldest ?? atMs, atMs)
        return oldest
      },
      owedCount: () => this.sent.size + this.unaryInFlight.size,
      hasLongCalls: () => this.longInFlight.size > 0,
      cancelLongCalls: () => { for (const call of [...this.longInFlight]) call.cancel() },
      ping: async () => await this.ping(),
      isClosed: () => this.closed
    })
    const Service = storageService()
    const channel = channelOf(opts.tls ?? clientTls(), this.nodeId)
    this.grpcClient = new Service(this.address, channel.credentials, {
      ...channel.options,
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

  // IoBatch messages and the requests they carried since the client was made (their ratio is the
  // mean batch; tests check that batching happens, metrics may show it).
  readonly sentStats = { messages: 0, requests: 0 }

  // Requests sent and not yet answered (for metrics); queued ones are not counted.
  get inFlight (): number { return this.sent.size }
  get queued (): number { return this.queue.length }
  get hung (): boolean { return this.progress.hung }

  async read (a: ReadArgs): Promise<Buffer> {
    const r = await this.io({ id: 0, read: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, length: a.length, absentMode: a.absentNotFound === true ? 1 : 0 } })
    if (r.data.length !== a.length) throw UkaiError.io(`${this.nodeId}: read returned ${r.data.length} bytes, ${a.length} requested`)
    return r.data
  }

  // write, discard and flush resolve to the incarnation of the node process that answered ('' from
  // nodes that predate it): dirty-flush.ts compares a flush's with its writes'.
  async write (a: WriteArgs): Promise<string> {
    // Checked here as well: an oversized message would break the whole stream, not just this call.
    if (a.data.length > MAX_IO_BYTES) throw UkaiError.badArgument(`${this.nodeId}: write of ${a.data.length} bytes exceeds the limit of ${MAX_IO_BYTES} bytes per request`)
    const startMs = performance.now()
    const req = { id: 0, write: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, data: a.data, leaseEpoch: a.leaseEpoch } }
    const r = await this.io(req)
    this.progress.writeLatency.observe(performance.now() - startMs)
    if (writeTraceOn) traceWrite(`client.done ${this.nodeId}`, a.block, a.offset, req.id)
    return r.incarnation ?? ''
  }

  async flush (a: FlushArgs): Promise<string> {
    const r = await this.io({ id: 0, flush: { diskUuid: a.diskUuid, leaseEpoch: a.leaseEpoch } })
    return r.incarnation ?? ''
  }

  async discard (a: DiscardArgs): Promise<string> {
    const r = await this.io({ id: 0, discard: { diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, length: a.length, leaseEpoch: a.leaseEpoch } })
    return r.incarnation ?? ''
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
  // With a lease epoch (an agent under the disk's lease) the node refuses it when fenced.
  async deleteDisk (a: { diskUuid: string, leaseEpoch?: number }): Promise<number> {
    return (await this.unary<{ freedBytes: number }>('DeleteDisk', a)).freedBytes
  }

  async deleteBlocks (a: { diskUuid: string, blocks: number[] }): Promise<number> {
    return (await this.unary<{ freedBytes: number }>('DeleteBlocks', a)).freedBytes
  }

  // Asks this node to pull a block's versions from another node (node-to-node copy).
  // Its deadline covers a whole block at WAN speed, not one small request.
  // With `probe` the node only reads the block from the source (a link measurement): it returns
  // the bytes read and stores nothing.
  // Its answer is due only once the whole block is durable on the node, so its silence says
  // nothing about a hung node: the hung watchdog does not count it as outstanding, and when other
  // requests find the node hung it is cancelled only after LONG_CALL_HUNG_CANCEL_MS of it. At
  // load 43-65 the migration bench's pulls were cancelled by a node too busy to answer a round-trip
  // probe for 2.5 s, and the relocation paused (issue 13, docs/performance.md).
  async pullBlock (a: PullBlockRequest, timeoutMs = PULL_TIMEOUT_MS): Promise<number> {
    return (await this.unary<{ bytes: number }>('PullBlock', a, timeoutMs, 'long')).bytes
  }

  // Drops the disk's versions that no kept epoch needs (see the .proto); returns what it freed.
  // A long call (see pullBlock): unlinking every such file of a disk may take a busy node long.
  async pruneVersions (a: { diskUuid: string, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number }): Promise<{ freedBytes: number, versionsRemoved: number }> {
    return await this.unary<{ freedBytes: number, versionsRemoved: number }>('PruneVersions', a, PULL_TIMEOUT_MS, 'long')
  }

  // Copy-on-write of a clone's block from its parent (locally or pulled from sourceNode).
  // Deliberately a prompt call, not a long one like pullBlock: it is on the guest's path (the
  // first write of a clone's block waits for it, vdisk/parent-chain.ts), so a node silent on it
  // must be found hung within the hung bound, as for a write, not hold the guest for PULL_TIMEOUT_MS.
  async copyBase (a: CopyBaseRequest): Promise<CopyBaseResponse> {
    return await this.unary<CopyBaseResponse>('CopyBase', a, PULL_TIMEOUT_MS)
  }

  // Which file holds the version a read of (block, epoch) returns (short-circuit reads). Cheap on
  // the node (in memory); callers pass a short deadline and fall back to reading over gRPC.
  async locateBlock (a: LocateBlockRequest, timeoutMs = this.callTimeoutMs): Promise<LocateBlockResponse> {
    return await this.unary<LocateBlockResponse>('LocateBlock', a, timeoutMs)
  }

  // Checks a disk's stored versions against their checksums now (or answers the background
  // scrub's findings, with diskUuid ''); a disk's check reads all its bytes: a long deadline, and
  // a long call (see pullBlock) — its silence says nothing about a hung node. The findings are
  // read from the node's memory: a prompt call.
  async scrub (a: ScrubRequest, timeoutMs = SCRUB_TIMEOUT_MS): Promise<ScrubResponse> {
    return await this.unary<ScrubResponse>('Scrub', a, timeoutMs, a.diskUuid === '' ? 'prompt' : 'long')
  }

  async stat (): Promise<StatResponse> {
    return await this.unary<StatResponse>('Stat', {})
  }

  // Answers when the node's event loop runs (it touches no disk there).
  async ping (timeoutMs = PING_TIMEOUT_MS): Promise<void> {
    await this.unary('Ping', {}, timeoutMs, 'ping')
  }

  // close(): fails everything pending with UNAVAILABLE and closes the channel (nothing to drain:
  // a caller that wants its answers awaits them first). destroy(err): the same, pending calls
  // fail with err. Both idempotent; the work is done by the time the call returns.
  private readonly life = new Lifecycle({
    abort: (err) => { this.failPending(() => isUkaiError(err) ? err : UkaiError.unavailable(`${this.nodeId}: client to ${this.address} destroyed: ${err.message}`, err)) },
    release: () => {
      this.closed = true
      this.unsubscribe()
      this.watchdog.stop()
      this.failPending(() => UkaiError.unavailable(`${this.nodeId}: client to ${this.address} closed`))
      this.grpcClient.close()
    }
  })

  close (): Promise<void> { return this.life.close() }
  destroy (err?: Error): Promise<void> { return this.life.destroy(err) }

  // Fails everything queued and in flight with `err()` and drops the stream.
  private failPending (err: () => UkaiError): void {
    for (const p of this.queue) this.settle(p, err())
    this.queue = []
    for (const p of [...this.sent.values()]) this.settle(p, err())
    const s = this.stream
    this.stream = undefined
    if (s !== undefined) s.cancel()
  }

  // ---- Io stream ----

  private async io (req: IoRequestOut): Promise<IoResponse> {
    if (this.closed) throw UkaiError.unavailable(`${this.nodeId}: client to ${this.address} is closed`)
    this.failIfHung()
    // Queued beyond what the window takes at the end of this turn.
    const waiting = this.queue.length + this.sent.size - this.windowSize
    if (waiting >= this.maxQueued) {
      throw UkaiError.unavailable(`${this.nodeId} (${this.address}): ${waiting} requests already queued`)
    }
    const id = this.nextId++
    req.id = id
    const resp = await new Promise<IoResponse>((resolve, reject) => {
      const p: Pending = { id, req, resolve, reject, timer: undefined as unknown as NodeJS.Timeout, sent: false, sentAtMs: 0 }
      p.timer = setTimeout(() => this.onTimeout(p), this.callTimeoutMs)
      if (writeTraceOn) this.trace('client.queue', p)
      this.queue.push(p)
      this.pump()
    })
    if (resp.code !== '') throw new UkaiError(resp.code as UkaiErrorCode, `${this.nodeId}: ${resp.message}`)
    return resp
  }

  // Requests go out at the end of the event-loop turn (setImmediate) that queued them, all in one
  // IoBatch message: the turn's FUSE or NBD requests for this node share the message's cost.
  private pump (): void {
    if (this.pumpScheduled || this.closed) return
    this.pumpScheduled = true
    setImmediate(this.sendQueued)
  }

  private readonly sendQueued = (): void => {
    this.pumpScheduled = false
    while (this.sent.size < this.windowSize && this.queue.length > 0 && !this.closed) {
      const s = this.stream ?? this.openStream()
      const batch: IoRequestOut[] = []
      let bytes = 0
      while (this.sent.size < this.windowSize && this.queue.length > 0) {
        const p = this.queue[0]
        const size = payloadBytes(p.req)
        if (batch.length > 0 && bytes + size > IO_BATCH_BYTES) break
        this.queue.shift()
        p.sent = true
        p.sentAtMs = Date.now()
        this.sent.set(p.id, p)
        if (writeTraceOn) this.trace('client.sent', p)
        batch.push(p.req)
        bytes += size
        if (bytes >= IO_BATCH_BYTES) break
      }
      this.sentStats.messages++
      this.sentStats.requests += batch.length
      if (writeTraceOn) s.write(batch, () => { for (const r of batch) if ('write' in r) traceWrite(`client.wrote ${this.nodeId}`, r.write.block, r.write.offset, r.id) })
      else s.write(batch)
    }
    if (this.sent.size > 0) this.watchdog.start()
  }

  private openStream (): grpc.ClientDuplexStream<IoRequestOut[], IoResponse[]> {
    const s = (this.grpcClient as unknown as { IoBatch: () => grpc.ClientDuplexStream<IoRequestOut[], IoResponse[]> }).IoBatch()
    this.stream = s
    s.on('data', (resps: IoResponse[]) => {
      this.progress.noteAnswer()
      for (const resp of resps) {
        const p = this.sent.get(resp.id)
        if (p === undefined) continue  // answered after its deadline
        this.sent.delete(resp.id)
        clearTimeout(p.timer)
        if (writeTraceOn) this.trace('client.rx', p)
        p.resolve(resp)
      }
      this.pump()
    })
    // A node that refuses the caller (authz.ts) says so, and a new stream would be refused too.
    const broken = (why: string, code: UkaiErrorCode = 'UNAVAILABLE'): void => {
      if (this.stream !== s) return
      this.stream = undefined
      for (const p of [...this.sent.values()]) {
        this.settle(p, new UkaiError(code, `${this.nodeId} (${this.address}): stream broke: ${why}`))
      }
      if (code === 'PERMISSION_DENIED') for (const p of this.queue.splice(0)) this.settle(p, new UkaiError(code, `${this.nodeId} (${this.address}): ${why}`))
      this.pump()  // queued requests get a fresh stream
    }
    s.on('error', (err: grpc.ServiceError) => broken(err.details ?? err.message, codeOfServiceError(err) === 'PERMISSION_DENIED' ? 'PERMISSION_DENIED' : 'UNAVAILABLE'))
    s.on('end', () => broken('server ended the stream'))
    s.on('close', () => broken('stream closed'))
    return s
  }

  // bench/write-stages.ts: a write's request at one stage of this client (lib/write-trace.ts).
  private trace (stage: string, p: Pending): void {
    if ('write' in p.req) traceWrite(`${stage} ${this.nodeId}`, p.req.write.block, p.req.write.offset, p.id)
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

  // ---- hung detection (see the top of the file) ----

  private failIfHung (): void {
    const since = this.progress.hungSinceMs
    if (since !== null) {
      this.watchdog.start()  // keeps pinging, so the node is let back in when it answers
      throw UkaiError.unavailable(`${this.nodeId} (${this.address}) is hung: no answer for ${this.hungAfterMs} ms with requests outstanding (${Date.now() - since} ms ago)`)
    }
  }

  // The node was declared hung (by this client or another of the same node): fail everything
  // pending and drop the stream, so a node that resumes does not first work through a backlog.
  private failAll (why: string): void {
    this.failPending(() => UkaiError.unavailable(`${this.nodeId} (${this.address}) is hung: ${why}`))
    for (const call of [...this.unaryInFlight.keys()]) call.cancel()  // answers CANCELLED → UNAVAILABLE
    this.watchdog.start()
  }

  private settle (p: Pending, err: Error): void {
    clearTimeout(p.timer)
    this.sent.delete(p.id)
    p.reject(err)
  }

  // ---- unary ----

  // kind: 'prompt' (its answer is due soon: its silence may find the node hung), 'long' (due
  // when long work ends: see pullBlock), 'ping' (goes out even to a hung node; counts for nothing).
  private async unary<Res> (method: string, req: unknown, timeoutMs = this.callTimeoutMs, kind: 'prompt' | 'long' | 'ping' = 'prompt'): Promise<Res> {
    if (this.closed) throw UkaiError.unavailable(`${this.nodeId}: client to ${this.address} is closed`)
    if (kind !== 'ping') this.failIfHung()
    const fn = (this.grpcClient as unknown as Record<string, UnaryMethod>)[method].bind(this.grpcClient)
    return await new Promise<Res>((resolve, reject) => {
      const call = fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => {
        this.unaryInFlight.delete(call)
        this.longInFlight.delete(call)
        // Any answer from the node itself (also an error it sent) shows it is not hung.
        if (err === null || codeOfServiceError(err) !== 'UNAVAILABLE') this.progress.noteAnswer()
        if (err !== null) reject(this.translate(err, method))
        else resolve(res as Res)
      })
      if (kind === 'prompt') {
        this.unaryInFlight.set(call, Date.now())
        this.watchdog.start()
      } else if (kind === 'long') {
        this.longInFlight.add(call)
      }
    })
  }

  private translate (err: grpc.ServiceError, method: string): UkaiError {
    const fromNode = trailerCode(err)
    if (fromNode !== undefined) return new UkaiError(fromNode, `${this.nodeId}: ${err.details}`, err)
    const code = codeOfStatus(err.code)
    if (code === 'UNAVAILABLE') {
      return UkaiError.unavailable(`${this.nodeId} (${this.address}): ${method} failed: ${err.details} (${grpc.status[err.code]})`, err)
    }
    return new UkaiError(code, `${this.nodeId} (${this.address}): ${method}: ${err.details}`, err)
  }
}

// The payload a request carries out (a write's data); what closes a batch early.
function payloadBytes (req: IoRequestOut): number {
  return 'write' in req ? req.write.data.length : 0
}
