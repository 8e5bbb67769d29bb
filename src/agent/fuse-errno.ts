// The one table from UkaiError codes to errno for the FUSE mount. Unknown errors become EIO
// and are logged, so a bug is never reported to a guest as a plausible-looking errno.
import { UkaiError, UkaiErrorCode } from '../errors'
import { Logger } from '../log'

// Linux errno values (fuse-native wants them negated).
const ERRNO: Record<UkaiErrorCode, number> = {
  BAD_ARGUMENT: 22, // EINVAL
  NOT_FOUND: 2, // ENOENT
  ALREADY_EXISTS: 17, // EEXIST
  NOT_ENOUGH_NODES: 28, // ENOSPC: nowhere to place the data
  ZK_UNAVAILABLE: 5, // EIO
  ZK_CONFLICT: 5, // EIO
  ZK_AUTH: 13, // EACCES
  FENCED: 5, // EIO
  LEASE_HELD: 16, // EBUSY
  BUSY: 16, // EBUSY
  OUT_OF_RANGE: 27, // EFBIG: the disk has a fixed size; grow it with truncate
  NO_SPACE: 28, // ENOSPC
  UNAVAILABLE: 5, // EIO
  IO_ERROR: 5, // EIO
  READ_ONLY: 30, // EROFS
  DATA_DIR: 5, // EIO
  CORRUPT_STREAM: 5, // EIO (CLI only)
  CHECKSUM: 5, // EIO: every replica's copy failed its checksum
  WRONG_BASE: 22, // EINVAL (CLI only)
  NOT_SUPPORTED: 95, // EOPNOTSUPP
  PERMISSION_DENIED: 13, // EACCES
  QUOTA_EXCEEDED: 122, // EDQUOT
  NO_ATTRIBUTE: 61, // ENODATA (= ENOATTR)
  TOO_BIG: 7, // E2BIG
  INTERNAL: 5 // EIO
}

export function toErrno (err: unknown, log: Logger, op: string): number {
  if (err instanceof UkaiError) {
    const errno = ERRNO[err.code]
    if (errno === 5 || err.code === 'INTERNAL') log.warn({ op, code: err.code, err: err.message }, 'I/O error returned to the mount')
    return -errno
  }
  log.error({ op, err: String((err as Error)?.stack ?? err) }, 'unexpected error in FUSE operation')
  return -5
}
