// A guard around two throws inside node-zookeeper-client 1.1.3 that take the whole process down,
// and around a transaction bug that makes a conditional write unconditional.
//
// Why: the library validates every error code a server answers against its own table (ZooKeeper
// 3.4's codes). ZooKeeper 3.5+ answers codes it does not know — SESSION_MOVED -118, NOWATCHER -121,
// REQUEST_TIMEOUT -122, THROTTLED_OP -127, ... — typically while sessions are re-established after
// a server restart. `Exception.create(code)` then throws `Error: Unknown code: -118` from the
// socket's 'data' handler (ConnectionManager.onSocketData), nobody can catch it, and the daemon
// exits: 4 daemons crashed in 2 of 14 ZooKeeper outages (issue 9), once both replicas of a disk.
// The bug is open upstream and the library is unmaintained, so we fix it here:
//
// 1. `Exception.create` accepts any code: an unknown one becomes an Exception whose getCode() is
//    the server's code (built from a known code, then relabelled). The pending call gets it as
//    its error, and src/meta/zk-client.ts translates it into a UkaiError like any other code.
// 2. `ConnectionManager.prototype.onSocketData` is wrapped: anything else it throws on a bad
//    frame drops the connection (the library reconnects within the session — its own reaction
//    to a frame it cannot place) instead of the process.
// 3. A handshake nobody answers is dropped. The library stops its connect timer when TCP
//    connects and then waits for the ConnectResponse forever; a ZooKeeper that is still starting
//    accepts connections and may leave them hanging (seen here: "ZooKeeperServer not running"
//    plus a NullPointerException, the socket left open) — the client then never reconnected.
//    We close such a socket after HANDSHAKE_TIMEOUT_MS; the library reconnects with the same
//    session. (Before issue 9 a watchdog replaced the whole session instead, losing every lease.)
// 4. `Transaction.prototype.{check,setData,remove}` start with `version = version || -1`, so a
//    multi op conditional on version 0 — every znode before its first rewrite: a fresh disk's
//    placement segments, its fence, a new lease — went out as version -1 ("any version"): the
//    check passed and the set overwrote whatever another process had written meanwhile (found by
//    test/meta-disk-map.test.ts: two owners of a fresh map, the first one's stale marks lost).
//    The op keeps the version it was given.
//
// Done at runtime, in the one room that talks to ZooKeeper, rather than with patch-package: the
// fix then travels with our code (dist/, `npm ci --ignore-scripts`, other checkouts), needs no
// install-time step, and test/meta-zk-bad-frame.test.ts proves it against a real server. It is
// applied before any client exists (zk-client.ts imports this module first) and checks the
// shape it patches, so a library upgrade that moves these functions fails loudly at start.
import zookeeper from 'node-zookeeper-client'
import { Logger, silentLogger } from '../log'

/* eslint-disable @typescript-eslint/no-var-requires */
const ExceptionModule: any = require('node-zookeeper-client/lib/Exception.js')
const ConnectionManager: any = require('node-zookeeper-client/lib/ConnectionManager.js')
const Transaction: any = require('node-zookeeper-client/lib/Transaction.js')

// ZooKeeper's own names for the codes the library does not know (KeeperException.Code, 3.8).
export const ZK_CODES_UNKNOWN_TO_LIBRARY: Record<number, string> = {
  [-12]: 'UNKNOWN_SESSION',
  [-13]: 'NEW_CONFIG_NO_QUORUM',
  [-14]: 'RECONFIG_IN_PROGRESS',
  [-118]: 'SESSION_MOVED',
  [-119]: 'NOT_READONLY',
  [-120]: 'EPHEMERAL_ON_LOCAL_SESSION',
  [-121]: 'NO_WATCHER',
  [-122]: 'REQUEST_TIMEOUT',
  [-123]: 'RECONFIG_DISABLED',
  [-124]: 'SESSION_CLOSED_REQUIRE_SASL_AUTH',
  [-125]: 'QUOTA_EXCEEDED',
  [-127]: 'THROTTLED_OP'
}

// A handshake on a LAN takes milliseconds; a loaded server a second or so.
const HANDSHAKE_TIMEOUT_MS = 3000

let applied = false
let log: Logger = silentLogger

// Where the guard logs what it caught (the daemon's logger; the last caller wins).
export function setZkGuardLogger (logger: Logger): void { log = logger }

export function applyZkLibraryGuard (): void {
  if (applied) return
  const Exception = zookeeper.Exception as any
  if (typeof ExceptionModule.create !== 'function' || ExceptionModule !== Exception || typeof ConnectionManager?.prototype?.onSocketData !== 'function' ||
    typeof ConnectionManager.prototype.onSocketConnected !== 'function' || typeof ConnectionManager.STATES?.CONNECTING !== 'number' ||
    ['check', 'setData', 'remove'].some(m => typeof Transaction?.prototype?.[m] !== 'function')) {
    throw new Error('node-zookeeper-client changed shape: src/meta/zk-library-guard.ts must be revisited')
  }
  applied = true
  const knownCreate = ExceptionModule.create as (code: number, path?: string) => any
  const known = new Set<number>(Object.values(Exception).filter((v): v is number => typeof v === 'number'))
  ExceptionModule.create = function create (code: number, path?: string): any {
    if (typeof code !== 'number' || known.has(code)) return knownCreate(code, path)
    const name = ZK_CODES_UNKNOWN_TO_LIBRARY[code] ?? 'UNKNOWN_CODE'
    const err = knownCreate(Exception.SYSTEM_ERROR, path)
    err.code = code
    err.name = name
    err.message = `Exception: ${name}[${code}]` + (path !== undefined ? `@${String(path)}` : '')
    log.warn({ zkCode: code, zkName: name }, 'ZooKeeper answered an error code node-zookeeper-client does not know; the call fails')
    return err
  }
  const STATES = ConnectionManager.STATES
  const onSocketConnected = ConnectionManager.prototype.onSocketConnected as (this: any) => void
  ConnectionManager.prototype.onSocketConnected = function guardedOnSocketConnected (this: any): void {
    onSocketConnected.call(this)
    const socket = this.socket
    const timer = setTimeout(() => {
      if (this.socket === socket && this.state === STATES.CONNECTING) {
        log.warn({ handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS }, 'ZooKeeper accepted the connection but did not answer the handshake; reconnecting')
        socket.destroy()
      }
    }, Math.min(HANDSHAKE_TIMEOUT_MS, this.connectTimeout ?? HANDSHAKE_TIMEOUT_MS))
    timer.unref()
  }
  for (const [method, versionArg] of [['check', 1], ['setData', 2], ['remove', 1]] as const) {
    const original = Transaction.prototype[method] as (this: any, ...args: unknown[]) => any
    Transaction.prototype[method] = function versionKept (this: any, ...args: unknown[]): any {
      const out = original.apply(this, args)
      if (args[versionArg] === 0) this.ops[this.ops.length - 1].version = 0
      return out
    }
  }
  const onSocketData = ConnectionManager.prototype.onSocketData as (this: any, buffer: Buffer) => void
  ConnectionManager.prototype.onSocketData = function guardedOnSocketData (this: any, buffer: Buffer): void {
    try {
      onSocketData.call(this, buffer)
    } catch (err) {
      log.error({ err: String(err) }, 'node-zookeeper-client failed on a ZooKeeper frame; dropping the connection (it reconnects within the session)')
      this.pendingBuffer = null
      this.socket?.destroy()
    }
  }
}
