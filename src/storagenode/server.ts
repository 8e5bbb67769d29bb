// The storage node's gRPC server: one BlockStore behind the ukai.storage.v1.Storage service.
// startStorageServer only wires: the store, the handlers (io-handler.ts: the Io stream, the data
// path; copy-handlers.ts: node-to-node copies; admin-handlers.ts: the store's control calls;
// rpc-answers.ts: how each answers and counts), the gRPC server, and the shutdown order. Every
// error leaves as a UkaiError code string (Io) or a gRPC status plus an 'ukai-code' trailer
// (unary); unknown exceptions become IO_ERROR and are logged.
import type { EventEmitter } from 'node:events'
import * as http2 from 'node:http2'
import type { Socket } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import { UkaiError } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { adminHandlers } from './admin-handlers'
import { Scrubber } from './scrub'
import { FLOW_CONTROL_WINDOW_BYTES } from './client'
import { BlockStore } from './block-store'
import { PeerClients, RegisteredPeer, copyHandlers } from './copy-handlers'
import { guardHandlers } from './authz'
import { CertificateFiles, serverCredentials } from './tls'
import type { RevocationList } from './revocation'
import { holdGcBallast } from '../lib/gc-ballast'
import { IO_REPLY_STALL_MS_MAX, IoBudgetStat, NodeIoBudget } from './io-budget'
import { IoBatchCall, IoCall, ioHandlers } from './io-handler'
import { nodeIncarnation } from './incarnation'
import { RpcObserver, ServerCounters, failureOf, unaryOf } from './rpc-answers'
import { MAX_MESSAGE_BYTES, StorageHandlers, storageService } from './wire'

const CLOSE_GRACE_MS_DEFAULT = 5000
const SHUTDOWN_WAIT_MS = 1000

export interface StorageServerOptions {
  nodeId: string
  dataDir: string
  listen: string              // 'HOST:PORT', port 0 picks a free port
  capacityBytes?: number
  // How this node reaches its peers for node-to-node copies, where that differs from the
  // address a peer registered (e.g. through a WAN-emulating proxy): node id → host:port.
  peerAddresses?: Record<string, string>
  // Mutual TLS and per-call authorization (tls.ts, authz.ts); absent: plaintext, anyone may
  // call anything (the daemon refuses that unless --insecure; in-process tests use it).
  tls?: { files: CertificateFiles, revoked: RevocationList }
  // The addresses a peer registered (ZooKeeper), for node-to-node copies: a PullBlock or
  // CopyBase naming any other address is refused. Absent: the address the caller names.
  registeredPeer?: RegisteredPeer
  ioReplyStallMs?: number     // see IO_REPLY_STALL_MS_MAX; tests shorten it
  rpc?: RpcObserver           // the metrics: told of every answered request
  scrub?: { bytesPerSecMax?: number, intervalMs?: number, startDelayMs?: number }  // scrub.ts
  // false: no checksums, no scrub — the benchmark switch `--bench-no-checksums` (version-files.ts).
  checksums?: boolean
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
  fsyncs: number
  versionFiles: number
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
  const nodeId = opts.nodeId
  const log = (opts.logger ?? silentLogger).child({ component: 'storage-server', nodeId })
  const { host, port: wantedPort } = parseListen(opts.listen)
  const uriHost = host.includes(':') ? `[${host}]` : host
  holdGcBallast()  // see lib/gc-ballast.ts: keeps V8 from a mark-compact every ~100 ms under load
  const store = await BlockStore.open({ nodeId, dataDir: opts.dataDir, capacityBytes: opts.capacityBytes, checksums: opts.checksums })

  const scrubber = new Scrubber({ store, ...opts.scrub, ...(opts.checksums === false ? { bytesPerSecMax: 0 } : {}), logger: log })
  const peers = new PeerClients(opts.peerAddresses, opts.registeredPeer)
  const counters: ServerCounters = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0, inFlight: 0 }
  const streams = new Set<IoCall | IoBatchCall>()
  let closing: Promise<void> | undefined  // set by the first close or destroy: handlers refuse
  let closeGraceMs = CLOSE_GRACE_MS_DEFAULT
  let drained: (() => void) | undefined  // wakes close() when the last in-flight request ends
  const isClosing = (): boolean => closing !== undefined
  const failure = failureOf(nodeId, counters, log)
  const unary = unaryOf({ nodeId, counters, failure, closing: isClosing, rpc: opts.rpc })
  // Node-wide memory bound of the Io streams (io-budget.ts).
  const ioBudget = new NodeIoBudget()
  // The host's boot id: a flush vouches only for writes acknowledged since the host's last boot
  // (incarnation.ts says why not per process).
  const incarnation = nodeIncarnation()

  const allHandlers: StorageHandlers = {
    ...ioHandlers({
      nodeId,
      store,
      budget: ioBudget,
      stallMs: opts.ioReplyStallMs ?? IO_REPLY_STALL_MS_MAX,
      log,
      counters,
      streams,
      failure,
      closing: isClosing,
      idle: () => { if (drained !== undefined) drained() },
      rpc: opts.rpc,
      incarnation
    }),
    ...copyHandlers({ nodeId, store, peers, unary }),
    ...adminHandlers({ store, budget: ioBudget, scrubber, unary })
  }
  const handlers = opts.tls === undefined ? allHandlers : guardHandlers(allHandlers, { nodeId, revoked: opts.tls.revoked, log })
  if (opts.tls === undefined) log.warn('storage node serving WITHOUT TLS: anyone who reaches its port may read, write or delete any disk\'s blocks')

  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES
  })
  server.addService(storageService().service, handlers)
  await opts.tls?.revoked.ready  // the CRL this node last knew is in force before the first call
  let port: number
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${uriHost}:${wantedPort}`, opts.tls === undefined ? grpc.ServerCredentials.createInsecure() : serverCredentials(opts.tls.files), (err, p) => err !== null ? reject(err) : resolve(p))
    })
  } catch (err) {
    await store.close()
    throw UkaiError.unavailable(`storage node ${nodeId}: cannot listen on ${opts.listen}: ${(err as Error).message}`, err)
  }
  const address = `${uriHost}:${port}`
  tuneServerSessions(server)
  scrubber.start(opts.scrub?.startDelayMs)
  if (opts.checksums === false) log.warn('checksums are OFF (--bench-no-checksums, a benchmark switch): versions written now are unverified')
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
    await peers.close()
    await scrubber.close()
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
      fsyncs: store.fsyncCount,
      versionFiles: store.versionFiles,
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
