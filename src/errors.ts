// One error class for the whole project. Callers match `err.code`, never `instanceof` chains.
// Foreign errors (ZooKeeper codes, gRPC status, errno) are translated at the boundary that owns them.

export type UkaiErrorCode =
  | 'BAD_ARGUMENT'        // a malformed size, name, block size, replica count, option
  | 'NOT_FOUND'           // unknown disk, node, site
  | 'ALREADY_EXISTS'      // a disk of that name exists
  | 'NOT_ENOUGH_NODES'    // too few live storage nodes for the replica count
  | 'ZK_UNAVAILABLE'      // ZooKeeper unreachable for longer than the connect timeout
  | 'ZK_CONFLICT'         // a conditional metadata update lost a race
  | 'ZK_AUTH'             // ZooKeeper refused our credentials (a znode's ACL does not grant them)
  | 'FENCED'              // a write carried a lease epoch older than one the node has seen
  | 'LEASE_HELD'          // the disk is open for write elsewhere and would not hand over
  | 'BUSY'                // the disk is open; the operation needs it closed
  | 'OUT_OF_RANGE'        // an I/O past the end of the disk
  | 'NO_SPACE'            // a storage node's disk (or configured capacity) is full
  | 'UNAVAILABLE'         // a storage node could not be reached in time
  | 'IO_ERROR'            // a replica write or read failed and no replica could serve it
  | 'READ_ONLY'           // write to a committed (immutable) version
  | 'DATA_DIR'            // a storage node's data dir is missing or not writable
  | 'CORRUPT_STREAM'      // an export stream failed its checks (checksum, truncation, format)
  | 'CHECKSUM'            // a stored block's bytes do not match their checksum (never served)
  | 'WRONG_BASE'          // an incremental stream does not apply onto the disk's current state
  | 'NOT_SUPPORTED'       // an operation the mount does not offer (a fallocate mode, an xattr namespace)
  | 'NO_ATTRIBUTE'        // an extended attribute the disk does not have
  | 'TOO_BIG'             // an extended attribute value over the size limit
  | 'QUOTA_EXCEEDED'      // the change would take a tenant past its capacity, disks or snapshots quota
  | 'PERMISSION_DENIED'   // a storage node refused the caller: no certificate of the cluster CA, a revoked one, or a role not allowed this call; the tenant API refused a tenant another tenant's disk
  | 'INTERNAL'            // a bug: an invariant did not hold

export class UkaiError extends Error {
  readonly code: UkaiErrorCode
  readonly cause?: unknown

  constructor (code: UkaiErrorCode, message: string, cause?: unknown) {
    super(message)
    this.name = 'UkaiError'
    this.code = code
    if (cause !== undefined) this.cause = cause
  }

  static badArgument (msg: string): UkaiError { return new UkaiError('BAD_ARGUMENT', msg) }
  static notFound (msg: string): UkaiError { return new UkaiError('NOT_FOUND', msg) }
  static alreadyExists (msg: string): UkaiError { return new UkaiError('ALREADY_EXISTS', msg) }
  static notEnoughNodes (msg: string): UkaiError { return new UkaiError('NOT_ENOUGH_NODES', msg) }
  static zkUnavailable (msg: string, cause?: unknown): UkaiError { return new UkaiError('ZK_UNAVAILABLE', msg, cause) }
  static conflict (msg: string): UkaiError { return new UkaiError('ZK_CONFLICT', msg) }
  static fenced (msg: string): UkaiError { return new UkaiError('FENCED', msg) }
  static busy (msg: string): UkaiError { return new UkaiError('BUSY', msg) }
  static outOfRange (msg: string): UkaiError { return new UkaiError('OUT_OF_RANGE', msg) }
  static noSpace (msg: string): UkaiError { return new UkaiError('NO_SPACE', msg) }
  static unavailable (msg: string, cause?: unknown): UkaiError { return new UkaiError('UNAVAILABLE', msg, cause) }
  static io (msg: string, cause?: unknown): UkaiError { return new UkaiError('IO_ERROR', msg, cause) }
  static internal (msg: string): UkaiError { return new UkaiError('INTERNAL', msg) }
  static corruptStream (msg: string): UkaiError { return new UkaiError('CORRUPT_STREAM', msg) }
  static checksum (msg: string): UkaiError { return new UkaiError('CHECKSUM', msg) }
  static wrongBase (msg: string): UkaiError { return new UkaiError('WRONG_BASE', msg) }
  static notSupported (msg: string): UkaiError { return new UkaiError('NOT_SUPPORTED', msg) }
  static noAttribute (msg: string): UkaiError { return new UkaiError('NO_ATTRIBUTE', msg) }
  static tooBig (msg: string): UkaiError { return new UkaiError('TOO_BIG', msg) }
  static quotaExceeded (msg: string): UkaiError { return new UkaiError('QUOTA_EXCEEDED', msg) }
  static permissionDenied (msg: string): UkaiError { return new UkaiError('PERMISSION_DENIED', msg) }
}

export function isUkaiError (err: unknown, code?: UkaiErrorCode): err is UkaiError {
  return err instanceof UkaiError && (code === undefined || err.code === code)
}

// Background promises end in .catch(safetyCatch): operating errors are expected and logged by
// whoever owns them; a programming error (TypeError, RangeError...) must not be swallowed.
export function safetyCatch (err: unknown): void {
  if (err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError || err instanceof ReferenceError) {
    throw err
  }
}
