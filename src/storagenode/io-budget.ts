// Memory bounds of the storage node's Io streams: a byte budget per stream and one per node.
//
// Why: every Io request costs the node memory until its reply has left — a read's reply buffer
// (the store's buffer, then the encoded message, then grpc-js's framed copy), a write's payload.
// The node used to bound a stream only by a count of requests being dispatched (256), and a
// request stopped counting once its reply was handed to grpc-js, not once the reply had left.
// A client that never read its answers (issue 9, item 5) thus grew the node from 139 to
// 1,162 MiB RSS with 4 MiB reads, and the memory stayed after the client cancelled. Measured
// here (test/storagenode-memory.test.ts, a client frozen after 512 reads of 4 MiB): peak RSS
// 2,332 MiB before, 208 MiB with these bounds; 149 MiB after the cancel.
//
// Now a request is charged its payload bytes (at least REPLY_MIN_BYTES) from the moment it is
// admitted until its reply has been written to the HTTP/2 stream (grpc-js calls the write
// callback) or the stream is gone. A stream may hold at most IO_STREAM_BUDGET_BYTES, the node at
// most IO_NODE_BUDGET_BYTES across all streams. A request that does not fit waits in its stream's
// queue (in arrival order: the store orders overlapping writes by dispatch order). Once waiting
// requests hold QUEUED_DATA_BYTES_MAX of write data (or REQUESTS_PER_STREAM_MAX wait) the stream
// stops being read (the server pauses the call; HTTP/2 flow control then pushes back on the
// client). A client that stops reading its replies therefore holds at most its stream budget;
// other streams go on within the rest of the node budget.
//
// The sizes: the agent keeps 32 requests in flight per node (client.ts) of at most 1 MiB (FUSE
// max_write), a node-to-node pull 4 × 1 MiB (block-pull.ts: an executor's 4 pulls on one peer
// stream just fit; more wait their turn); 16 MiB per stream lets 4 reads of 4 MiB (the largest
// request) or 16 of 1 MiB be in flight at once, and is never reached by 32 × 128 KiB.
// 64 MiB per node leaves room for three streams at their full budget beside one stuck one.
// Throughput and the rest: docs/architecture.md ("Io stream memory bounds").
import { UkaiError } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { IoBudgetStat, MAX_IO_BYTES } from './wire'

export type { IoBudgetStat }

export const IO_STREAM_BUDGET_BYTES = 16 * 1024 * 1024
export const IO_NODE_BUDGET_BYTES = 64 * 1024 * 1024
// The least a request is charged: an empty reply still costs an object, a frame and a callback
// in grpc-js and HTTP/2; with this, a client that never reads its write acknowledgements holds at
// most IO_STREAM_BUDGET_BYTES / REPLY_MIN_BYTES of them, not an unbounded number.
export const REPLY_MIN_BYTES = 1024
// Requests queued or admitted on one stream at a time whatever their size (flushes, discards,
// reads waiting for budget: a waiting read holds only its small request).
export const REQUESTS_PER_STREAM_MAX = 256
// Write data a stream's waiting requests may hold (it arrived with them) before the stream stops
// being read; reading resumes once none is left, so a stream at its budget does not pause and
// resume once per request.
export const QUEUED_DATA_BYTES_MAX = MAX_IO_BYTES
// A stream whose replies have not moved for this long while it holds budget is reset (HTTP/2
// RST_STREAM): a few such clients would otherwise hold the node budget for good. The client's
// own deadline per request is 10 s (client.ts), so a reply stuck for 30 s has no reader left.
export const IO_REPLY_STALL_MS_MAX = 30_000
export const IO_STALL_CHECK_MS = 1000

interface Waiter { bytes: number, grant: () => void }

// The node-wide budget. Grants in FIFO order so a large request is not passed over forever.
export class NodeIoBudget {
  private heldBytes = 0
  private peakBytes = 0
  private readonly waiters: Waiter[] = []

  constructor (readonly budgetBytes = IO_NODE_BUDGET_BYTES, readonly streamBudgetBytes = IO_STREAM_BUDGET_BYTES) {
    if (!(streamBudgetBytes >= MAX_IO_BYTES + REPLY_MIN_BYTES)) throw UkaiError.badArgument(`Io stream budget ${streamBudgetBytes} bytes is below one request of ${MAX_IO_BYTES} bytes`)
    if (!(budgetBytes >= streamBudgetBytes)) throw UkaiError.badArgument(`Io node budget ${budgetBytes} bytes is below the stream budget ${streamBudgetBytes}`)
  }

  stat (): IoBudgetStat {
    return { ioHeldBytes: this.heldBytes, ioHeldPeakBytes: this.peakBytes, ioBudgetBytes: this.budgetBytes, ioWaitingStreams: this.waiters.length }
  }

  // Takes `bytes` now if they fit and nobody waits before us.
  tryTake (bytes: number): boolean {
    if (this.waiters.length > 0 || this.heldBytes + bytes > this.budgetBytes) return false
    this.take(bytes)
    return true
  }

  // Calls grant() once `bytes` are taken for the caller; the returned function withdraws the wait.
  wait (bytes: number, grant: () => void): () => void {
    const w: Waiter = { bytes, grant }
    this.waiters.push(w)
    return () => {
      const i = this.waiters.indexOf(w)
      if (i >= 0) { this.waiters.splice(i, 1); this.grantWaiters() }
    }
  }

  release (bytes: number): void {
    this.heldBytes -= bytes
    if (this.heldBytes < 0) throw UkaiError.internal(`Io budget released ${-this.heldBytes} bytes more than it held`)
    this.grantWaiters()
  }

  private take (bytes: number): void {
    this.heldBytes += bytes
    if (this.heldBytes > this.peakBytes) this.peakBytes = this.heldBytes
  }

  private grantWaiters (): void {
    while (this.waiters.length > 0 && this.heldBytes + this.waiters[0].bytes <= this.budgetBytes) {
      const w = this.waiters.shift() as Waiter
      this.take(w.bytes)
      w.grant()
    }
  }
}

// One request's charge: settled exactly once, when its reply has left or its stream is gone.
export interface Charge { readonly bytes: number, settled: boolean }

// The bytes a request is charged: its payload either way (a read's reply, a write's data), at
// most a stream's budget — a read asking for more is refused by the store without allocating,
// and a charge over the budget could never be granted.
export function chargeBytes (payloadBytes: number, streamBudgetBytes: number): number {
  return Math.min(Math.max(payloadBytes, REPLY_MIN_BYTES), streamBudgetBytes)
}

// One Io stream's admission: requests queue in arrival order and run while the stream's and the
// node's budgets allow. `setReading(false)` asks the owner to stop reading the stream.
export class StreamIoGate<T> {
  private readonly queue: Array<{ item: T, bytes: number, dataBytes: number }> = []
  private readonly charges = new Set<Charge>()
  private heldBytes = 0
  private queuedDataBytes = 0
  private withdraw: (() => void) | undefined  // set while the queue's head waits for the node budget
  private reading = true
  private closed = false

  constructor (
    private readonly node: NodeIoBudget,
    private readonly run: (item: T, charge: Charge) => void,
    private readonly setReading: (reading: boolean) => void
  ) {}

  // Requests queued or charged (dispatching, or reply not yet left).
  get pending (): number { return this.queue.length + this.charges.size }
  get queued (): number { return this.queue.length }

  // payloadBytes: what the request will cost (a read's reply, a write's data); dataBytes: what it
  // holds already (a write's data).
  push (item: T, payloadBytes: number, dataBytes: number): void {
    if (this.closed) return
    this.queue.push({ item, bytes: chargeBytes(payloadBytes, this.node.streamBudgetBytes), dataBytes })
    this.queuedDataBytes += dataBytes
    this.admit()
  }

  // The request's reply has left (or will never be sent): its bytes go back. Idempotent.
  settle (c: Charge): void {
    if (c.settled) return
    c.settled = true
    this.charges.delete(c)
    this.heldBytes -= c.bytes
    this.node.release(c.bytes)
    this.admit()
  }

  // The stream is gone: queued requests are dropped, every charge is released (the transport
  // drops the replies it still held). Idempotent.
  private readonly life = new Lifecycle({ release: () => { this.drop() } })

  close (): Promise<void> { return this.life.close() }

  private drop (): void {
    this.closed = true
    this.queue.length = 0
    this.queuedDataBytes = 0
    this.withdraw?.()
    this.withdraw = undefined
    for (const c of [...this.charges]) this.settle(c)
  }

  private admit (): void {
    while (!this.closed && this.withdraw === undefined && this.queue.length > 0) {
      const head = this.queue[0]
      // Over the stream budget: wait for this stream's own replies to leave. A stream holding
      // nothing always admits (a request is never larger than the budget, see the constructor).
      if (this.charges.size >= REQUESTS_PER_STREAM_MAX || (this.heldBytes > 0 && this.heldBytes + head.bytes > this.node.streamBudgetBytes)) break
      if (!this.node.tryTake(head.bytes)) {
        this.withdraw = this.node.wait(head.bytes, () => {
          this.withdraw = undefined
          this.start(head.bytes)
          this.admit()
        })
        break
      }
      this.start(head.bytes)
    }
    this.updateReading()
  }

  // The head of the queue has its node bytes: charge it to the stream and run it.
  private start (bytes: number): void {
    const { item, dataBytes } = this.queue.shift() as { item: T, bytes: number, dataBytes: number }
    this.queuedDataBytes -= dataBytes
    const charge: Charge = { bytes, settled: false }
    this.charges.add(charge)
    this.heldBytes += bytes
    this.run(item, charge)
  }

  // Stop reading when waiting requests hold QUEUED_DATA_BYTES_MAX of write data or the count
  // bound is reached; read again once no write data waits and the count is back to half.
  private updateReading (): void {
    const count = this.queue.length + this.charges.size
    const reading = this.closed ||
      (this.reading ? this.queuedDataBytes < QUEUED_DATA_BYTES_MAX && count < REQUESTS_PER_STREAM_MAX : this.queuedDataBytes === 0 && count <= REQUESTS_PER_STREAM_MAX / 2)
    if (reading !== this.reading) { this.reading = reading; this.setReading(reading) }
  }
}
