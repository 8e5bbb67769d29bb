// The Io handlers: the data path. One long-lived bidirectional stream per client carries many
// requests in flight (read, write, flush, discard), answered out of order by id; the store
// orders overlapping writes to one version by arrival, so each request is handed to it
// synchronously, in the order it came off the stream. Errors leave as a UkaiError code string in
// the reply.
//
// Two framings of the same requests: Io (one request, one reply per message) and IoBatch (what
// the agent uses: many requests per message, handed to the store in their order; the replies
// that become ready in one event-loop turn leave as one message, closed early at IO_BATCH_BYTES).
// Each request of a batch is admitted, charged, fenced and answered on its own: a stale lease
// epoch refuses exactly the requests that carry it. Why: a message costs grpc-js and HTTP/2 the
// same whatever it carries, so the agent's and the node's CPU per write fall with the batch.
// Measured (bench/write-cpu.ts, 2 replicas, medians of 3 interleaved rounds): a node's CPU per
// 4 KiB write 215 → 161 µs at 4 in flight (0.75), 134 → 116 µs at 16 (0.87); one node under one
// client (bench/storage-stream.ts) 0.74 and 0.57. The rest is the store's own per-write work.
//
// Memory: an Io request is charged its payload bytes from admission until its reply has left
// (io-budget.ts: 16 MiB per stream, 64 MiB per node); a request that does not fit waits, and once
// waiting writes hold 4 MiB the stream stops being read, so HTTP/2 flow control pushes back on the
// client. A client that never reads its replies used to grow the node by everything it asked for
// (2.3 GiB RSS measured); it now holds its stream budget, a cancelled or broken stream drops its
// queue and releases its charges, and a stream whose replies have not moved for 30 s is reset.
import * as http2 from 'node:http2'
import * as grpc from '@grpc/grpc-js'
import { UkaiError, safetyCatch } from '../errors'
import type { Logger } from '../log'
import type { BlockStore } from './block-store'
import { Charge, IO_STALL_CHECK_MS, NodeIoBudget, StreamIoGate } from './io-budget'
import type { Failure, RpcObserver, ServerCounters } from './rpc-answers'
import { IO_BATCH_BYTES, IoRequestIn, IoResponse, StorageHandlers } from './wire'
import { faultWriteDelayMs } from './write-delay-fault'
import { sleep } from '../lib/timers'
import { traceWrite, writeTraceOn } from '../lib/write-trace'

// Decoded requests grpc-js may buffer in a call's readable side while we do not read it (Node's
// object-mode default is 16: 64 MiB of 4 MiB writes per paused stream); one is enough, the
// stream's own queue is in io-budget.ts.
const READ_AHEAD_MESSAGES = 1
const EMPTY = Buffer.alloc(0)

export type IoCall = grpc.ServerDuplexStream<IoRequestIn, IoResponse>
export type IoBatchCall = grpc.ServerDuplexStream<IoRequestIn[], IoResponse[]>

export interface IoHandlerDeps {
  nodeId: string
  store: Pick<BlockStore, 'read' | 'write' | 'flush' | 'discard'>
  budget: NodeIoBudget         // node-wide memory bound of the Io streams (io-budget.ts)
  stallMs: number              // a stream whose replies have not moved this long is reset
  log: Logger
  counters: ServerCounters
  streams: Set<IoCall | IoBatchCall>  // open streams, ended by the server's shutdown
  failure: Failure
  closing: () => boolean       // true once the server began shutting down
  idle: () => void             // told when the last request in flight ended (shutdown drains)
  rpc?: RpcObserver            // the metrics: each request's operation, latency and code
  // The host's boot id (incarnation.ts), in every write, discard and flush answer: what lets the
  // agent tell a flush after a host crash (the page cache, and the writes, lost) from one that
  // covers the writes the node acknowledged (dirty-flush.ts).
  incarnation: string
}

export function ioHandlers (deps: IoHandlerDeps): Pick<StorageHandlers, 'Io' | 'IoBatch'> {
  const { nodeId, store, counters, log, incarnation } = deps

  // Calls the store synchronously (so per-key ordering follows arrival) and resolves to the answer.
  const dispatch = async (req: IoRequestIn): Promise<IoResponse> => {
    const id = req.id
    try {
      switch (req.op) {
        case 'read': {
          const r = req.read as NonNullable<IoRequestIn['read']>
          const data = await store.read(r.diskUuid, r.block, r.epoch, r.offset, r.length, r.absentMode === 1)
          counters.bytesRead += data.length
          return { id, code: '', message: '', data }
        }
        case 'write': {
          const w = req.write as NonNullable<IoRequestIn['write']>
          await store.write(w.diskUuid, w.block, w.epoch, w.offset, w.data, w.leaseEpoch)
          if (writeTraceOn) traceWrite(`node.written ${nodeId}`, w.block, w.offset, id)
          counters.bytesWritten += w.data.length
          const faultMs = faultWriteDelayMs()
          if (faultMs > 0) await sleep(faultMs)
          return { id, code: '', message: '', data: EMPTY, incarnation }
        }
        case 'flush': {
          const f = req.flush as NonNullable<IoRequestIn['flush']>
          await store.flush(f.diskUuid, f.leaseEpoch)
          return { id, code: '', message: '', data: EMPTY, incarnation }
        }
        case 'discard': {
          const d = req.discard as NonNullable<IoRequestIn['discard']>
          await store.discard(d.diskUuid, d.block, d.epoch, d.offset, d.length, d.leaseEpoch)
          return { id, code: '', message: '', data: EMPTY, incarnation }
        }
        default:
          throw UkaiError.badArgument(`storage node ${nodeId}: request ${id} carries no operation`)
      }
    } catch (err) {
      const f = deps.failure(err, `${req.op ?? 'io'} request ${id}`)
      return { id, code: f.code, message: f.message, data: EMPTY }
    }
  }

  const serve = (call: IoCall | IoBatchCall, batched: boolean): void => {
    deps.streams.add(call)
    limitReadAhead(call, READ_AHEAD_MESSAGES)
    let dispatching = 0
    let clientDone = false
    let gone = false
    let sending = 0          // reply messages handed to grpc-js and not yet written out
    let progressMs = 0       // when a reply last went out (or the first began waiting)
    // IoBatch: the replies of one event-loop turn leave as one message (see the top of the file).
    let replies: IoResponse[] = []
    let replyCharges: Charge[] = []
    let replyBytes = 0
    let replyScheduled = false
    const finish = (): void => {
      if (clientDone && gate.queued === 0 && dispatching === 0 && !gone) {
        sendReplies()
        gone = true
        deps.streams.delete(call)
        call.end()
      }
    }
    // The reply's charge is settled when grpc-js has written it to the HTTP/2 stream, or at once
    // when the stream can no longer take it.
    const send = (msg: IoResponse | IoResponse[], charges: Charge[]): void => {
      if (gone || call.cancelled || call.writableEnded) { for (const c of charges) gate.settle(c); return }
      if (sending++ === 0) progressMs = Date.now()
      if (writeTraceOn) traceReplies(`node.tx ${nodeId}`, msg)
      ;(call as grpc.ServerDuplexStream<unknown, unknown>).write(msg, () => {
        sending--; progressMs = Date.now(); for (const c of charges) gate.settle(c)
        if (writeTraceOn) traceReplies(`node.txdone ${nodeId}`, msg)
      })
    }
    const sendReplies = (): void => {
      replyScheduled = false
      if (replies.length === 0) return
      const msg = replies
      const charges = replyCharges
      replies = []
      replyCharges = []
      replyBytes = 0
      send(msg, charges)
    }
    const reply = (resp: IoResponse, charge: Charge): void => {
      if (!batched) { send(resp, [charge]); return }
      if (replies.length > 0 && replyBytes + resp.data.length > IO_BATCH_BYTES) sendReplies()
      replies.push(resp)
      replyCharges.push(charge)
      replyBytes += resp.data.length
      if (replyBytes >= IO_BATCH_BYTES) sendReplies()
      else if (!replyScheduled) { replyScheduled = true; setImmediate(sendReplies) }
    }
    const stallCheck = setInterval(() => {
      if (sending === 0 || Date.now() - progressMs < deps.stallMs) return
      log.warn({ peer: call.getPeer(), replies: sending, stalledMs: Date.now() - progressMs }, 'io stream reset: the client has not read its replies')
      resetStream(call)
      drop()
    }, Math.min(IO_STALL_CHECK_MS, deps.stallMs))
    stallCheck.unref()
    const gate: StreamIoGate<IoRequestIn> = new StreamIoGate(deps.budget, (req, charge) => {
      if (deps.closing()) {
        reply({ id: req.id, code: 'UNAVAILABLE', message: `storage node ${nodeId} is shutting down`, data: EMPTY }, charge)
        finish()
        return
      }
      dispatching++
      counters.inFlight++
      const t0 = deps.rpc === undefined ? 0 : performance.now()
      dispatch(req).then(resp => { deps.rpc?.done(req.op ?? 'none', t0, resp.code); reply(resp, charge) }).catch(err => {
        gate.settle(charge)
        log.error({ err }, 'io response failed')
      }).finally(() => {
        dispatching--
        counters.inFlight--
        if (counters.inFlight === 0) deps.idle()
        finish()
      })
    }, reading => { if (reading) call.resume(); else call.pause() })
    const take = (req: IoRequestIn): void => {
      counters.requests++
      if (writeTraceOn && req.op === 'write') traceWrite(`node.rx ${nodeId}`, req.write?.block ?? 0, req.write?.offset ?? 0, req.id)
      gate.push(req, payloadBytes(req), req.op === 'write' ? payloadBytes(req) : 0)
    }
    // A batch's requests reach the gate in their order, as separate messages would.
    call.on('data', batched ? (reqs: IoRequestIn[]) => { for (const req of reqs) take(req) } : take)
    call.on('end', () => { clientDone = true; finish() })
    // Cancelled or broken: drop what waits and release every charge (the transport drops the
    // replies it held). 'close' also covers a stream destroyed without either event.
    const drop = (): void => {
      gone = true
      deps.streams.delete(call)
      clearInterval(stallCheck)
      for (const c of replyCharges) gate.settle(c)
      replies = []
      replyCharges = []
      gate.close().catch(safetyCatch)
    }
    call.on('error', drop)
    call.on('cancelled', drop)
    call.on('close', drop)
  }
  return {
    Io: (call: IoCall) => serve(call, false),
    IoBatch: (call: IoBatchCall) => serve(call, true)
  }
}

// bench/write-stages.ts: every reply of a message at one stage (lib/write-trace.ts).
function traceReplies (stage: string, msg: IoResponse | IoResponse[]): void {
  for (const r of Array.isArray(msg) ? msg : [msg]) traceWrite(stage, 0, 0, r.id)
}

// The bytes a request brings or asks for: a write's data, a read's reply.
function payloadBytes (req: IoRequestIn): number {
  if (req.op === 'read') return req.read?.length ?? 0
  if (req.op === 'write') return req.write?.data.length ?? 0
  return 0
}

// grpc-js has no server-side cancel: reset the call's HTTP/2 stream (RST_STREAM CANCEL), which
// drops the replies it holds, ends the call for the client, and makes grpc-js emit 'cancelled'.
// Reaches into grpc-js's call objects (`call.call`, through interceptors' `nextCall`, to the one
// holding the Http2Stream); ends the call the public way if that ever changes.
function resetStream (call: IoCall | IoBatchCall): void {
  let inner = (call as unknown as { call?: unknown }).call
  for (let depth = 0; depth < 8 && typeof inner === 'object' && inner !== null; depth++) {
    const stream = (inner as { stream?: { close?: unknown } }).stream
    if (typeof stream?.close === 'function') {
      (stream.close as (code: number) => void)(http2.constants.NGHTTP2_CANCEL)
      return
    }
    inner = (inner as { nextCall?: unknown }).nextCall
  }
  call.destroy()
}

// grpc-js hands a call's messages to an object-mode Readable whose buffer (16 messages by default)
// fills while the call is paused. Node has no public setter for the high-water mark; this reaches
// into the stream state and is a no-op if that ever changes.
function limitReadAhead (call: object, messages: number): void {
  const state = (call as { _readableState?: { highWaterMark?: unknown } })._readableState
  if (state !== undefined && typeof state.highWaterMark === 'number') state.highWaterMark = messages
}
