// How the storage node's handlers answer: what every request counts, an error turned into a
// code and a message (a UkaiError keeps its code; anything else is IO_ERROR, and logged, since it
// is a bug or a foreign error no boundary translated), and the unary wrapper (refuse while the
// server shuts down, count, answer a gRPC status plus an 'ukai-code' trailer: status.ts).
import * as grpc from '@grpc/grpc-js'
import { UkaiError, UkaiErrorCode, isUkaiError } from '../errors'
import type { Logger } from '../log'
import { toServiceError } from './status'

export interface ServerCounters { requests: number, errors: number, bytesRead: number, bytesWritten: number, inFlight: number }

// Told of every answered request, for the node's metrics (src/metrics implements it): which call
// (an Io operation, or a unary method as its handler names it: a fixed small set),
// performance.now() when it was taken up, and its code ('' for success). Called on the data path:
// it only adds to numbers it holds.
export interface RpcObserver { done: (rpc: string, startMs: number, code: string) => void }

export type Failure = (err: unknown, what: string) => { code: UkaiErrorCode, message: string }

export function failureOf (nodeId: string, counters: ServerCounters, log: Logger): Failure {
  return (err, what) => {
    counters.errors++
    if (isUkaiError(err)) return { code: err.code, message: err.message }
    log.error({ err, what }, 'unexpected error')
    return { code: 'IO_ERROR', message: `storage node ${nodeId}: ${what}: ${(err as Error)?.message ?? String(err)}` }
  }
}

export interface UnaryDeps {
  nodeId: string
  counters: ServerCounters
  failure: Failure
  closing: () => boolean   // true once the server began shutting down
  rpc?: RpcObserver
}

// `cancelled()` says whether the caller gave up (its deadline passed, it cancelled): a long
// handler (PullBlock) checks it between steps and stops, so no orphan outlives its caller.
export type Unary = <Req, Res>(what: string, fn: (req: Req, cancelled: () => boolean) => Promise<Res>) => grpc.handleUnaryCall<Req, Res>

export function unaryOf (deps: UnaryDeps): Unary {
  return <Req, Res>(what: string, fn: (req: Req, cancelled: () => boolean) => Promise<Res>): grpc.handleUnaryCall<Req, Res> => (call, callback) => {
    if (deps.closing()) {
      callback(toServiceError(new UkaiError('UNAVAILABLE', `storage node ${deps.nodeId} is shutting down`)))
      return
    }
    deps.counters.requests++
    const t0 = deps.rpc === undefined ? 0 : performance.now()
    fn(call.request, () => call.cancelled).then(res => { deps.rpc?.done(what, t0, ''); callback(null, res) }, err => {
      const f = deps.failure(err, what)
      deps.rpc?.done(what, t0, f.code)
      callback(toServiceError(new UkaiError(f.code, f.message)))
    })
  }
}
