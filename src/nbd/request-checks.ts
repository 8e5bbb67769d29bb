// The checks the NBD protocol asks of every transmission request before any I/O: a known
// command, flags valid for it, a range within the export, no write to a read-only export, a
// payload within NBD_PAYLOAD_BYTES_MAX; and the commands' names for messages. Separate from
// session.ts, which runs a connection: these are the protocol's rules over one request, the
// export and what the handshake negotiated, with no state of their own.
import { NbdExport } from './agent-exports'
import * as P from './protocol'

// The largest READ/WRITE payload (the protocol's default maximum, 2^25).
export const NBD_PAYLOAD_BYTES_MAX = 32 * 1024 * 1024

// The checks the protocol asks of every request, before any I/O: null when it may run.
// `structured`: structured replies were negotiated; `blockStatusOn`: base:allocation was selected for this export.
export function checkRequest (exp: NbdExport, req: P.Request, structured: boolean, blockStatusOn: boolean): { error: number, message: string } | null {
  const size = BigInt(exp.sizeBytes)
  const end = req.offset + BigInt(req.lengthBytes)
  const allowed = allowedFlags(req.type, structured)
  if (allowed === null) return { error: P.NBD_EINVAL, message: `unknown command ${req.type}` }
  if ((req.flags & ~allowed) !== 0) return { error: P.NBD_EINVAL, message: `flags 0x${req.flags.toString(16)} not valid for ${commandName(req.type)}` }
  const writes = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_TRIM || req.type === P.NBD_CMD_WRITE_ZEROES
  if (writes && exp.readOnly) return { error: P.NBD_EPERM, message: `${exp.name} is read-only` }
  switch (req.type) {
    case P.NBD_CMD_READ:
      if (req.lengthBytes > NBD_PAYLOAD_BYTES_MAX) return { error: structured ? P.NBD_EOVERFLOW : P.NBD_EINVAL, message: `read of ${req.lengthBytes} bytes: at most ${NBD_PAYLOAD_BYTES_MAX} per request` }
      if (end > size) return { error: P.NBD_EINVAL, message: `read past the end of ${exp.name} (${exp.sizeBytes} bytes)` }
      break
    case P.NBD_CMD_WRITE:
    case P.NBD_CMD_WRITE_ZEROES:
      if (end > size) return { error: P.NBD_ENOSPC, message: `write past the end of ${exp.name} (${exp.sizeBytes} bytes)` }
      if (req.type === P.NBD_CMD_WRITE_ZEROES && (req.flags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0 && (req.flags & P.NBD_CMD_FLAG_NO_HOLE) !== 0) {
        return { error: P.NBD_ENOTSUP, message: 'zeroes without a hole are written like data: not fast' }
      }
      break
    case P.NBD_CMD_TRIM:
    case P.NBD_CMD_CACHE:
      if (end > size) return { error: P.NBD_EINVAL, message: `${commandName(req.type)} past the end of ${exp.name} (${exp.sizeBytes} bytes)` }
      break
    case P.NBD_CMD_BLOCK_STATUS:
      if (!blockStatusOn) return { error: P.NBD_EINVAL, message: 'no metadata context was selected (base:allocation)' }
      if (req.lengthBytes === 0 || end > size) return { error: P.NBD_EINVAL, message: `block status of ${req.lengthBytes} bytes at ${req.offset} on ${exp.name} (${exp.sizeBytes} bytes)` }
      break
    case P.NBD_CMD_FLUSH:
      if (req.offset !== 0n || req.lengthBytes !== 0) return { error: P.NBD_EINVAL, message: 'flush takes no offset or length' }
      break
  }
  return null
}

function allowedFlags (type: number, structured: boolean): number | null {
  const FUA = P.NBD_CMD_FLAG_FUA // valid on every command once SEND_FUA was advertised; ignored where nothing is written
  switch (type) {
    case P.NBD_CMD_READ: return FUA | (structured ? P.NBD_CMD_FLAG_DF : 0)
    case P.NBD_CMD_WRITE: return FUA
    case P.NBD_CMD_FLUSH: return FUA
    case P.NBD_CMD_TRIM: return FUA
    case P.NBD_CMD_CACHE: return FUA
    case P.NBD_CMD_WRITE_ZEROES: return FUA | P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO
    case P.NBD_CMD_BLOCK_STATUS: return FUA | P.NBD_CMD_FLAG_REQ_ONE
    default: return null
  }
}

export function commandName (type: number): string {
  return ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write-zeroes', 'block-status'][type] ?? `command ${type}`
}
