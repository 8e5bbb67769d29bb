// The storage node's gRPC server: one BlockStore behind the ukai.storage.v1.Storage service.
// Io streams carry many requests in flight, answered out of order by id; the store orders
// overlapping writes to one version by arrival. Every error leaves as a UkaiError code string
// (Io) or a gRPC status plus an 'ukai-code' trailer (unary); unknown exceptions become IO_ERROR
// and are logged.
//
// Memory: an Io request is charged its payload bytes from admission until its reply has left
// (io-budget.ts: 16 MiB per stream, 64 MiB per node); a request that does not fit waits, and once
// waiting writes hold 4 MiB the stream stops being read, so HTTP/2 flow control pushes back on the
// client. A client that never reads its replies used to grow the node by everything it asked for
// (2.3 GiB RSS measured); it now holds its stream budget, a cancelled or broken stream drops its
// queue and releases its charges, and a stream whose replies have not moved for 30 s is reset.
import type { EventEmitter } from 'node:events'
import * as http2 from 'node:http2'
import type { Socket } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { UkaiError, UkaiErrorCode, isUkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { copyBaseFromPeer } from './base-copy'
import { pullBlock } from './block-pull'
import { FLOW_CONTROL_WINDOW_BYTES, StorageClient } from './client'
import { BlockStore } from './block-store'
import { holdGcBallast } from '../lib/gc-ballast'
import { Lifecycle } from '../lib/lifecycle'
import { Charge, IO_REPLY_STALL_MS_MAX, IO_STALL_CHECK_MS, IoBudgetStat, NodeIoBudget, StreamIoGate } from './io-budget'
import { toServiceError } from './status'
import {
  IoRequestIn, IoResponse, MAX_MESSAGE_BYTES, StorageHandlers, storageService
} from './wire'

// Decoded requests grpc-js may buffer in a call's readable side while we do not read it (Node's
// object-mode default is 16: 64 MiB of 4 MiB writes per paused stream); one is enough, the
// stream's own queue is in io-budget.ts.
const READ_AHEAD_MESSAGES = 1
const CLOSE_GRACE_MS_DEFAULT = 5000
const SHUTDOWN_WAIT_MS = 1000
const EMPTY = Buffer.alloc(0)

export interface StorageServerOptions {
  nodeId: string
  dataDir: string
  listen: string              // 'HOST:PORT', port 0 picks a free port
  capacityBytes?: number
  // How this node reaches its peers for node-to-node copies, where that differs from the
  // address a peer registered (e.g. through a WAN-emulating proxy): node id → host:port.
  peerAddresses?: Record<string, string>
  ioReplyStallMs?: number     // see IO_REPLY_STALL_MS_MAX; tests shorten it
  logger?: Logger
}

export interface StorageServerStats extends IoBudgetStat {
  streams: number
  inFlight: number
  requests: number
  errors: number
  bytesRead: number
  bytesWritten: number
  usedBytes: number
  openFiles: number
}

export interface StorageServer {
  address: string   // host:port actually bound
  port: number
  stats: () => StorageServerStats
  // Drains (in flight up to graceMs, then streams ended, gRPC shut down, the store fsynced).
  close: (graceMs?: number) => Promise<void>
  // Aborts: gRPC force-shut (calls reset), the store closed without fsync.
  destroy: (err?: Error) => Promise<void>
}

export async function startStorageServer (opts: StorageServerOptions): Promise<StorageServer> {
  const log = (opts.logger ?? silentLogger).child({ component: 'storage-server', nodeId: opts.nodeId })
  const { host, port: wantedPort } = parseListen(opts.listen)
  const uriHost = host.includes(':') ? `[${host}]` : host
  holdGcBallast()  // see lib/gc-ballast.ts: keeps V8 from a mark-compact every ~100 ms under load
  const store = await BlockStore.open({ nodeId: opts.nodeId, dataDir: opts.dataDir, capacityBytes: opts.capacityBytes })

  // Clients to peers for PullBlock, one per (node, address); closed with the server.
  const peers = new Map<string, StorageClient>()
  const peer = (id: string, address: string): StorageClient => {
    const key = `${id}@${address}`
    let c = peers.get(key)
    if (c === undefined) { c = new StorageClient({ nodeId: id, address }); peers.set(key, c) }
    return c
  }
  const counters = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0, inFlight: 0 }
  const streams = new Set<grpc.ServerDuplexStream<IoRequestIn, IoResponse>>()
  let closing: Promise<void> | undefined  // set by the first close or destroy: handlers refuse
  let closeGraceMs = CLOSE_GRACE_MS_DEFAULT
  let drained: (() => void) | undefined  // wakes close() when the last in-flight request ends

  const failure = (err: unknown, what: string): { code: UkaiErrorCode, message: string } => {
    counters.errors++
    if (isUkaiError(err)) return { code: err.code, message: err.message }
    log.error({ err, what }, 'unexpected error')
    return { code: 'IO_ERROR', message: `storage node ${opts.nodeId}: ${what}: ${(err as Error)?.message ?? String(err)}` }
  }

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
          counters.bytesWritten += w.data.length
          return { id, code: '', message: '', data: EMPTY }
        }
        case 'flush': {
          const f = req.flush as NonNullable<IoRequestIn['flush']>
          await store.flush(f.diskUuid, f.leaseEpoch)
          return { id, code: '', message: '', data: EMPTY }
        }
        case 'discard': {
          const d = req.discard as NonNullable<IoRequestIn['discard']>
          await store.discard(d.diskUuid, d.block, d.epoch, d.offset, d.length, d.leaseEpoch)
          return { id, code: '', message: '', data: EMPTY }
        }
        default:
          throw UkaiError.badArgument(`storage node ${opts.nodeId}: request ${id} carries no operation`)
      }
    } catch (err) {
      const f = failure(err, `${req.op ?? 'io'} request ${id}`)
      return { id, code: f.code, message: f.message, data: EMPTY }
    }
  }

  // Node-wide memory bound of the Io streams (io-budget.ts).
  const ioBudget = new NodeIoBudget()
  const stallMs = opts.ioReplyStallMs ?? IO_REPLY_STALL_MS_MAX

  const io: StorageHandlers['Io'] = (call) => {
    streams.add(call)
    limitReadAhead(call, READ_AHEAD_MESSAGES)
    let dispatching = 0
    let clientDone = false
    let gone = false
    let sending = 0          // replies handed to grpc-js and not yet written out
    let progressMs = 0       // when a reply last went out (or the first began waiting)
    const finish = (): void => {
      if (clientDone && gate.queued === 0 && dispatching === 0 && !gone) { gone = true; streams.delete(call); call.end() }
    }
    // The reply's charge is settled when grpc-js has written it to the HTTP/2 stream, or at once
    // when the stream can no longer take it.
    const reply = (resp: IoResponse, charge: Charge): void => {
      if (gone || call.cancelled || call.writableEnded) { gate.settle(charge); return }
      if (sending++ === 0) progressMs = Date.now()
      call.write(resp, () => { sending--; progressMs = Date.now(); gate.settle(charge) })
    }
    const stallCheck = setInterval(() => {
      if (sending === 0 || Date.now() - progressMs < stallMs) return
      log.warn({ peer: call.getPeer(), replies: sending, stalledMs: Date.now() - progressMs }, 'io stream reset: the client has not read its replies')
      resetStream(call)
      drop()
    }, Math.min(IO_STALL_CHECK_MS, stallMs))
    stallCheck.unref()
    const gate: StreamIoGate<IoRequestIn> = new StreamIoGate(ioBudget, (req, charge) => {
      if (closing !== undefined) {
        reply({ id: req.id, code: 'UNAVAILABLE', message: `storage node ${opts.nodeId} is shutting down`, data: EMPTY }, charge)
        finish()
        return
      }
      dispatching++
      counters.inFlight++
      dispatch(req).then(resp => reply(resp, charge)).catch(err => {
        gate.settle(charge)
        log.error({ err }, 'io response failed')
      }).finally(() => {
        dispatching--
        counters.inFlight--
        if (counters.inFlight === 0 && drained !== undefined) drained()
        finish()
      })
    }, reading => { if (reading) call.resume(); else call.pause() })
    call.on('data', (req: IoRequestIn) => {
      counters.requests++
      gate.push(req, payloadBytes(req), req.op === 'write' ? payloadBytes(req) : 0)
    })
    call.on('end', () => { clientDone = true; finish() })
    // Cancelled or broken: drop what waits and release every charge (the transport drops the
    // replies it held). 'close' also covers a stream destroyed without either event.
    const drop = (): void => { gone = true; streams.delete(call); clearInterval(stallCheck); gate.close().catch(safetyCatch) }
    call.on('error', drop)
    call.on('cancelled', drop)
    call.on('close', drop)
  }

  const unary = <Req, Res>(what: string, fn: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> => (call, callback) => {
    if (closing !== undefined) {
      callback(toServiceError(new UkaiError('UNAVAILABLE', `storage node ${opts.nodeId} is shutting down`)))
      return
    }
    counters.requests++
    fn(call.request).then(res => callback(null, res), err => {
      const f = failure(err, what)
      callback(toServiceError(new UkaiError(f.code, f.message)))
    })
  }

  const handlers: StorageHandlers = {
    Io: io,
    Fence: unary('fence', async (r) => ({ leaseEpoch: await store.fence(r.diskUuid, r.leaseEpoch) })),
    BlockInfo: unary('block info', async (r) => ({ versions: await store.blockInfo(r.diskUuid, r.block) })),
    ListBlocks: unary('list blocks', async (r) => ({ blocks: store.listBlocks(r.diskUuid) })),
    DeleteDisk: unary('delete disk', async (r) => ({ freedBytes: await store.deleteDisk(r.diskUuid) })),
    DeleteBlocks: unary('delete blocks', async (r) => ({ freedBytes: await store.deleteBlocks(r.diskUuid, r.blocks) })),
    Stat: unary('stat', async () => ({ ...await store.stat(), ...ioBudget.stat() })),
    PullBlock: unary('pull block', async (r) => {
      const address = opts.peerAddresses?.[r.sourceNode] ?? r.sourceAddress
      return { bytes: await pullBlock(store, peer(r.sourceNode, address), r) }
    }),
    PruneVersions: unary('prune versions', async (r) => await store.pruneVersions(r.diskUuid, r.keepEpochs, r.dropNewer, r.leaseEpoch)),
    CopyBase: unary('copy base', async (r) => {
      if (r.sourceNode === '' || r.sourceNode === opts.nodeId) {
        const result = await store.copyBase(r.diskUuid, r.block, r.epoch, r.baseUuid, r.baseEpoch, r.leaseEpoch)
        return { result, bytes: 0 }
      }
      return await copyBaseFromPeer(store, peer(r.sourceNode, opts.peerAddresses?.[r.sourceNode] ?? r.sourceAddress), r)
    }),
    LocateBlock: unary('locate block', async (r) => store.locate(r.diskUuid, r.block, r.epoch)),
    Ping: unary('ping', async () => ({}))
  }

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES
  })
  server.addService(storageService().service, handlers)
  let port: number
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${uriHost}:${wantedPort}`, grpc.ServerCredentials.createInsecure(), (err, p) => err !== null ? reject(err) : resolve(p))
    })
  } catch (err) {
    await store.close()
    throw UkaiError.unavailable(`storage node ${opts.nodeId}: cannot listen on ${opts.listen}: ${(err as Error).message}`, err)
  }
  const address = `${uriHost}:${port}`
  tuneServerSessions(server)
  log.info({ address, dataDir: store.dataDir, capacityBytes: store.capacityBytes, usedBytes: store.usedBytes, dataDirSyncMs: store.startSyncMs, dataDirSyncFiles: store.startSyncFiles }, 'storage node listening')

  const drain = async (graceMs: number): Promise<void> => {
    // 1. stop accepting (handlers answer UNAVAILABLE), 2. drain in flight with a deadline,
    // 3. end the streams so clients see a clean end, 4. gRPC shutdown, forced if slow,
    // 5. flush and close the store. destroy skips 2 and 5's flush, and forces 4 at once.
    if (counters.inFlight > 0 && graceMs > 0) {
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, graceMs)
        drained = () => { clearTimeout(timer); resolve() }
      })
      drained = undefined
    }
  }
  const release = async (graceMs: number): Promise<void> => {
    for (const call of streams) call.end()
    streams.clear()
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { server.forceShutdown(); resolve() }, graceMs > 0 ? Math.min(graceMs, SHUTDOWN_WAIT_MS) : 0)
      server.tryShutdown(() => { clearTimeout(timer); resolve() })
    })
    server.forceShutdown()
    await Promise.all([...peers.values()].map(async c => { await c.close() }))
    if (life.destroyed) await store.destroy(life.error ?? undefined)
    else await store.close()
    log.info({ ...counters }, 'storage node stopped')
  }
  const life = new Lifecycle({
    drain: async () => { await drain(closeGraceMs) },
    abort: () => { server.forceShutdown(); drained?.() },
    release: async () => { await release(life.destroyed ? 0 : closeGraceMs) }
  })

  return {
    address,
    port,
    stats: () => ({
      streams: streams.size,
      inFlight: counters.inFlight,
      requests: counters.requests,
      errors: counters.errors,
      bytesRead: counters.bytesRead,
      bytesWritten: counters.bytesWritten,
      usedBytes: store.usedBytes,
      openFiles: store.openFiles,
      ...ioBudget.stat()
    }),
    close: async (graceMs = CLOSE_GRACE_MS_DEFAULT) => {
      if (closing === undefined) closeGraceMs = graceMs
      closing = life.close()
      await closing
    },
    destroy: async (err?: Error) => {
      closing = life.destroy(err)
      await closing
    }
  }
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
function resetStream (call: grpc.ServerDuplexStream<IoRequestIn, IoResponse>): void {
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

function parseListen (listen: string): { host: string, port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw UkaiError.badArgument(`bad listen address '${listen}': expected HOST:PORT (port 0 picks a free one)`)
  }
  return { host: m[1] ?? m[2], port }
}

// grpc-js has no server-side options for the HTTP/2 receive windows or TCP_NODELAY; set them per
// connection. At Node's defaults (64 KiB per stream and per connection) the one Io stream admits
// half a 128 KiB write before the server's WINDOW_UPDATE comes back, so 4 writes in flight move
// at one window per round trip. Reaches into a grpc-js private field, so it degrades to a no-op
// if that field ever changes.
export function tuneServerSessions (server: grpc.Server, windowBytes: number = FLOW_CONTROL_WINDOW_BYTES): void {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers
  if (!(servers instanceof Map)) return
  for (const h of servers.keys()) {
    if (typeof (h as EventEmitter).on !== 'function') continue
    ;(h as EventEmitter).on('connection', (socket: Socket) => { socket.setNoDelay(true) })
    ;(h as EventEmitter).on('session', (session: http2.Http2Session) => {
      try {
        session.settings({ initialWindowSize: windowBytes })  // per stream, streams to come included
      } catch { /* session already closing */ }
      session.once('remoteSettings', () => {
        try { session.setLocalWindowSize(windowBytes) } catch { /* session already closing */ }
      })
    })
  }
}
