// The one table between UkaiError codes and gRPC status, both directions. A unary call's error
// leaves the server as a status plus an 'ukai-code' trailer naming the exact code; the client
// trusts the trailer. The status alone is a summary (several codes share one) for tools that do
// not know the trailer — and what our client falls back on for statuses that carry none, which
// the gRPC library produces itself (deadlines, cancellations, oversized messages, lost peers).
// The compiler tells you when a code or a status has no entry, as src/agent/fuse-errno.ts does.
import * as grpc from '@grpc/grpc-js'
import { UkaiError, UkaiErrorCode } from '../errors'
import { ERROR_CODE_METADATA_KEY } from './wire'

// Code → status, what the server sends (canonical gRPC meanings).
const STATUS_OF_CODE: Record<UkaiErrorCode, grpc.status> = {
  BAD_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  NOT_FOUND: grpc.status.NOT_FOUND,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  NOT_ENOUGH_NODES: grpc.status.FAILED_PRECONDITION,
  ZK_UNAVAILABLE: grpc.status.UNAVAILABLE,
  ZK_CONFLICT: grpc.status.ABORTED,
  ZK_AUTH: grpc.status.PERMISSION_DENIED,
  FENCED: grpc.status.FAILED_PRECONDITION,
  LEASE_HELD: grpc.status.FAILED_PRECONDITION,
  BUSY: grpc.status.FAILED_PRECONDITION,
  OUT_OF_RANGE: grpc.status.OUT_OF_RANGE,
  NO_SPACE: grpc.status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
  IO_ERROR: grpc.status.UNKNOWN,
  READ_ONLY: grpc.status.FAILED_PRECONDITION,
  DATA_DIR: grpc.status.FAILED_PRECONDITION,
  CORRUPT_STREAM: grpc.status.DATA_LOSS,
  CHECKSUM: grpc.status.DATA_LOSS,  // the one status a read answers for rotten bytes
  WRONG_BASE: grpc.status.FAILED_PRECONDITION,
  NOT_SUPPORTED: grpc.status.UNIMPLEMENTED,
  NO_ATTRIBUTE: grpc.status.NOT_FOUND,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  QUOTA_EXCEEDED: grpc.status.RESOURCE_EXHAUSTED,
  TOO_BIG: grpc.status.INVALID_ARGUMENT,
  INTERNAL: grpc.status.INTERNAL
}

// Status → code, for an error without a trailer: what the status means when the gRPC library
// (or a proxy) produced it, not the server.
const CODE_OF_STATUS: Record<grpc.status, UkaiErrorCode> = {
  [grpc.status.OK]: 'IO_ERROR', // an error object with status OK: nothing to go on
  [grpc.status.CANCELLED]: 'UNAVAILABLE',
  [grpc.status.UNKNOWN]: 'IO_ERROR',
  [grpc.status.INVALID_ARGUMENT]: 'BAD_ARGUMENT',
  [grpc.status.DEADLINE_EXCEEDED]: 'UNAVAILABLE',
  [grpc.status.NOT_FOUND]: 'NOT_FOUND',
  [grpc.status.ALREADY_EXISTS]: 'IO_ERROR',
  [grpc.status.PERMISSION_DENIED]: 'PERMISSION_DENIED',
  // Not NO_SPACE: without a trailer this is the library refusing a message over the size limit.
  [grpc.status.RESOURCE_EXHAUSTED]: 'BAD_ARGUMENT',
  [grpc.status.FAILED_PRECONDITION]: 'FENCED',
  [grpc.status.ABORTED]: 'IO_ERROR',
  [grpc.status.OUT_OF_RANGE]: 'OUT_OF_RANGE',
  [grpc.status.UNIMPLEMENTED]: 'IO_ERROR',
  [grpc.status.INTERNAL]: 'IO_ERROR', // the library's own failures (a frame it could not parse)
  [grpc.status.UNAVAILABLE]: 'UNAVAILABLE',
  [grpc.status.DATA_LOSS]: 'CHECKSUM', // only a node's checksum check answers it on the data path
  [grpc.status.UNAUTHENTICATED]: 'PERMISSION_DENIED'
}

// Every code there is (the table's keys; the compiler keeps them complete).
export const UKAI_ERROR_CODES = Object.keys(STATUS_OF_CODE) as UkaiErrorCode[]

export function isUkaiErrorCode (s: unknown): s is UkaiErrorCode {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(STATUS_OF_CODE, s)
}

export function statusOfCode (code: UkaiErrorCode): grpc.status { return STATUS_OF_CODE[code] }

export function codeOfStatus (status: grpc.status): UkaiErrorCode { return CODE_OF_STATUS[status] ?? 'IO_ERROR' }

// What a unary handler hands to grpc-js: the status, the message, the exact code as a trailer.
export function toServiceError (err: UkaiError): Partial<grpc.StatusObject> & Error {
  const metadata = new grpc.Metadata()
  metadata.set(ERROR_CODE_METADATA_KEY, err.code)
  return Object.assign(new Error(err.message), { code: statusOfCode(err.code), details: err.message, metadata })
}

// The code the server named in the trailer; undefined when there is none (the library's own
// error) or it is not a code we know (a newer server: the status decides).
export function trailerCode (err: Pick<grpc.ServiceError, 'metadata'>): UkaiErrorCode | undefined {
  const got = err.metadata?.get(ERROR_CODE_METADATA_KEY)[0]
  return isUkaiErrorCode(got) ? got : undefined
}

// The code of a failed call: the trailer when the server sent one, else the status's meaning.
export function codeOfServiceError (err: Pick<grpc.ServiceError, 'code' | 'metadata'>): UkaiErrorCode {
  return trailerCode(err) ?? codeOfStatus(err.code)
}
