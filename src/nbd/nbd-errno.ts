// The one table from UkaiError codes to NBD error values (the FUSE mount's is
// src/agent/fuse-errno.ts). NBD allows only eight values, so several codes share one. Unknown
// errors become EIO and are logged, so a bug never reaches a guest as a plausible-looking error.
import { UkaiError, UkaiErrorCode } from '../errors'
import { Logger } from '../log'
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM } from './protocol'

const NBD_ERROR: Record<UkaiErrorCode, number> = {
  BAD_ARGUMENT: NBD_EINVAL,
  NOT_FOUND: NBD_EIO,          // the disk was deleted under an open export
  ALREADY_EXISTS: NBD_EIO,
  NOT_ENOUGH_NODES: NBD_ENOSPC, // nowhere to place the data
  ZK_UNAVAILABLE: NBD_EIO,
  ZK_CONFLICT: NBD_EIO,
  ZK_AUTH: NBD_EPERM,
  FENCED: NBD_EIO,             // the lease moved: this host's write was refused
  LEASE_HELD: NBD_EIO,         // no EBUSY in NBD
  BUSY: NBD_EIO,
  OUT_OF_RANGE: NBD_ENOSPC,    // the spec: a write past the end (and EFBIG) is ENOSPC
  NO_SPACE: NBD_ENOSPC,
  UNAVAILABLE: NBD_EIO,
  IO_ERROR: NBD_EIO,
  READ_ONLY: NBD_EPERM,        // the spec: a write to a read-only export is EPERM
  DATA_DIR: NBD_EIO,
  CORRUPT_STREAM: NBD_EIO,
  CHECKSUM: NBD_EIO,
  WRONG_BASE: NBD_EINVAL,
  NOT_SUPPORTED: NBD_EINVAL,   // the spec keeps ENOTSUP for fast-zero requests
  NO_ATTRIBUTE: NBD_EINVAL,
  PERMISSION_DENIED: NBD_EPERM,
  QUOTA_EXCEEDED: NBD_ENOSPC,
  TOO_BIG: NBD_EINVAL,
  INTERNAL: NBD_EIO
}

export function toNbdError (err: unknown, log: Logger, op: string): number {
  if (err instanceof UkaiError) {
    const e = NBD_ERROR[err.code]
    if (e === NBD_EIO) log.warn({ op, code: err.code, err: err.message }, 'I/O error returned to an NBD client')
    return e
  }
  log.error({ op, err: String((err as Error)?.stack ?? err) }, 'unexpected error in an NBD request')
  return NBD_EIO
}
