// The NBD wire format: every constant and every encoding the server sends or parses, in one file
// (the NetworkBlockDevice/nbd project's doc/proto.md; values copied from its "Values" section).
// Big-endian throughout. Fixed newstyle handshake only (no oldstyle, no TLS, no extended headers).

// --- handshake --------------------------------------------------------------------------------

export const NBD_MAGIC = 0x4e42444d41474943n          // 'NBDMAGIC'
export const NBD_IHAVEOPT = 0x49484156454f5054n       // 'IHAVEOPT': server greeting and every option
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n

// Handshake flags (server, 16 bits) and client flags (32 bits).
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0
export const NBD_FLAG_NO_ZEROES = 1 << 1
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
export const NBD_FLAG_C_NO_ZEROES = 1 << 1

// Transmission flags (16 bits).
export const NBD_FLAG_HAS_FLAGS = 1 << 0
export const NBD_FLAG_READ_ONLY = 1 << 1
export const NBD_FLAG_SEND_FLUSH = 1 << 2
export const NBD_FLAG_SEND_FUA = 1 << 3
export const NBD_FLAG_ROTATIONAL = 1 << 4
export const NBD_FLAG_SEND_TRIM = 1 << 5
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6
export const NBD_FLAG_SEND_DF = 1 << 7
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8
export const NBD_FLAG_SEND_CACHE = 1 << 10
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11

// Options.
export const NBD_OPT_EXPORT_NAME = 1
export const NBD_OPT_ABORT = 2
export const NBD_OPT_LIST = 3
export const NBD_OPT_STARTTLS = 5
export const NBD_OPT_INFO = 6
export const NBD_OPT_GO = 7
export const NBD_OPT_STRUCTURED_REPLY = 8
export const NBD_OPT_LIST_META_CONTEXT = 9
export const NBD_OPT_SET_META_CONTEXT = 10

// Option replies.
export const NBD_REP_ACK = 1
export const NBD_REP_SERVER = 2
export const NBD_REP_INFO = 3
export const NBD_REP_META_CONTEXT = 4
const NBD_REP_FLAG_ERROR = 0x80000000
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0
export const NBD_INFO_NAME = 1
export const NBD_INFO_DESCRIPTION = 2
export const NBD_INFO_BLOCK_SIZE = 3

// --- transmission -----------------------------------------------------------------------------

export const NBD_REQUEST_MAGIC = 0x25609513
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef

export const NBD_CMD_READ = 0
export const NBD_CMD_WRITE = 1
export const NBD_CMD_DISC = 2
export const NBD_CMD_FLUSH = 3
export const NBD_CMD_TRIM = 4
export const NBD_CMD_CACHE = 5
export const NBD_CMD_WRITE_ZEROES = 6
export const NBD_CMD_BLOCK_STATUS = 7

export const NBD_CMD_FLAG_FUA = 1 << 0
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1
export const NBD_CMD_FLAG_DF = 1 << 2
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4

export const NBD_REPLY_FLAG_DONE = 1 << 0
export const NBD_REPLY_TYPE_NONE = 0
export const NBD_REPLY_TYPE_OFFSET_DATA = 1
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

// base:allocation status flags.
export const NBD_STATE_HOLE = 1 << 0
export const NBD_STATE_ZERO = 1 << 1
export const BASE_ALLOCATION = 'base:allocation'

// Error values (the only ones the protocol allows).
export const NBD_EPERM = 1
export const NBD_EIO = 5
export const NBD_ENOMEM = 12
export const NBD_EINVAL = 22
export const NBD_ENOSPC = 28
export const NBD_EOVERFLOW = 75
export const NBD_ENOTSUP = 95
export const NBD_ESHUTDOWN = 108

// --- sizes ------------------------------------------------------------------------------------

export const NBD_OPTION_HEADER_BYTES = 16      // IHAVEOPT, option, length
export const NBD_REQUEST_HEADER_BYTES = 28     // magic, flags, type, cookie, offset, length
// Strings (export names, messages) MUST be no longer than this.
export const NBD_STRING_BYTES_MAX = 4096
// Servers SHOULD NOT send more extents than this in one block-status chunk.
export const NBD_EXTENTS_PER_CHUNK_MAX = 1 << 20

// --- encoders (server → client) ---------------------------------------------------------------

// The server's first 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags.
export function encodeGreeting (handshakeFlags: number): Buffer {
  const b = Buffer.alloc(18)
  b.writeBigUInt64BE(NBD_MAGIC, 0)
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8)
  b.writeUInt16BE(handshakeFlags, 16)
  return b
}

export function encodeOptionReply (option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length)
  b.writeBigUInt64BE(NBD_OPT_REPLY_MAGIC, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(type, 12)
  b.writeUInt32BE(data.length, 16)
  data.copy(b, 20)
  return b
}

// NBD_REP_SERVER data: name length, name.
export function encodeServerReplyData (name: string): Buffer {
  const n = Buffer.from(name, 'utf8')
  const b = Buffer.alloc(4 + n.length)
  b.writeUInt32BE(n.length, 0)
  n.copy(b, 4)
  return b
}

export function encodeInfoExport (sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12)
  b.writeUInt16BE(NBD_INFO_EXPORT, 0)
  b.writeBigUInt64BE(BigInt(sizeBytes), 2)
  b.writeUInt16BE(transmissionFlags, 10)
  return b
}

export interface BlockSizeConstraints { minimumBytes: number, preferredBytes: number, maximumPayloadBytes: number }

export function encodeInfoBlockSize (c: BlockSizeConstraints): Buffer {
  const b = Buffer.alloc(14)
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0)
  b.writeUInt32BE(c.minimumBytes, 2)
  b.writeUInt32BE(c.preferredBytes, 6)
  b.writeUInt32BE(c.maximumPayloadBytes, 10)
  return b
}

export function encodeInfoName (name: string): Buffer {
  const n = Buffer.from(name, 'utf8')
  const b = Buffer.alloc(2 + n.length)
  b.writeUInt16BE(NBD_INFO_NAME, 0)
  n.copy(b, 2)
  return b
}

export function encodeMetaContextReplyData (id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8')
  const b = Buffer.alloc(4 + n.length)
  b.writeUInt32BE(id, 0)
  n.copy(b, 4)
  return b
}

// The reply to NBD_OPT_EXPORT_NAME (no option-reply framing): size, flags, and 124 zero bytes
// unless both sides agreed on NO_ZEROES.
export function encodeExportNameReply (sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134)
  b.writeBigUInt64BE(BigInt(sizeBytes), 0)
  b.writeUInt16BE(transmissionFlags, 8)
  return b
}

export function encodeSimpleReply (cookie: bigint, error: number): Buffer {
  const b = Buffer.alloc(16)
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0)
  b.writeUInt32BE(error, 4)
  b.writeBigUInt64BE(cookie, 8)
  return b
}

// A structured reply chunk's 20-byte header; the payload follows it.
export function encodeChunkHeader (cookie: bigint, flags: number, type: number, payloadBytes: number): Buffer {
  const b = Buffer.alloc(20)
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0)
  b.writeUInt16BE(flags, 4)
  b.writeUInt16BE(type, 6)
  b.writeBigUInt64BE(cookie, 8)
  b.writeUInt32BE(payloadBytes, 16)
  return b
}

// NBD_REPLY_TYPE_OFFSET_DATA: header plus the 8-byte offset; the data follows separately (no copy).
export function encodeOffsetDataHeader (cookie: bigint, flags: number, offset: number, dataBytes: number): Buffer {
  const h = encodeChunkHeader(cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataBytes)
  const b = Buffer.alloc(28)
  h.copy(b, 0)
  b.writeBigUInt64BE(BigInt(offset), 20)
  return b
}

export function encodeOffsetHole (cookie: bigint, flags: number, offset: number, holeBytes: number): Buffer {
  const b = Buffer.alloc(32)
  encodeChunkHeader(cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12).copy(b, 0)
  b.writeBigUInt64BE(BigInt(offset), 20)
  b.writeUInt32BE(holeBytes, 28)
  return b
}

export function encodeErrorChunk (cookie: bigint, flags: number, error: number, message: string): Buffer {
  const m = truncateUtf8(message, NBD_STRING_BYTES_MAX)
  const b = Buffer.alloc(20 + 6 + m.length)
  encodeChunkHeader(cookie, flags, NBD_REPLY_TYPE_ERROR, 6 + m.length).copy(b, 0)
  b.writeUInt32BE(error, 20)
  b.writeUInt16BE(m.length, 24)
  m.copy(b, 26)
  return b
}

export interface Extent { lengthBytes: number, flags: number }

export function encodeBlockStatusChunk (cookie: bigint, flags: number, contextId: number, extents: Extent[]): Buffer {
  const payload = 4 + 8 * extents.length
  const b = Buffer.alloc(20 + payload)
  encodeChunkHeader(cookie, flags, NBD_REPLY_TYPE_BLOCK_STATUS, payload).copy(b, 0)
  b.writeUInt32BE(contextId, 20)
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.lengthBytes, 24 + 8 * i)
    b.writeUInt32BE(e.flags, 28 + 8 * i)
  })
  return b
}

function truncateUtf8 (s: string, maxBytes: number): Buffer {
  const b = Buffer.from(s, 'utf8')
  if (b.length <= maxBytes) return b
  let end = maxBytes
  while (end > 0 && (b[end] & 0xc0) === 0x80) end-- // not inside a multi-byte character
  return b.subarray(0, end)
}

// --- decoders (client → server) ---------------------------------------------------------------

export class NbdProtocolError extends Error {
  constructor (message: string) { super(message); this.name = 'NbdProtocolError' }
}

export interface OptionHeader { magic: bigint, option: number, lengthBytes: number }

export function decodeOptionHeader (b: Buffer): OptionHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), lengthBytes: b.readUInt32BE(12) }
}

// NBD_OPT_INFO / NBD_OPT_GO data: name, then the information requests.
export interface InfoRequest { name: string, infos: number[] }

export function decodeInfoRequest (data: Buffer): InfoRequest {
  if (data.length < 6) throw new NbdProtocolError(`info request of ${data.length} bytes: at least 6`)
  const nameBytes = data.readUInt32BE(0)
  if (nameBytes > data.length - 6) throw new NbdProtocolError(`export name of ${nameBytes} bytes in ${data.length} bytes of option data`)
  const name = decodeString(data.subarray(4, 4 + nameBytes))
  const count = data.readUInt16BE(4 + nameBytes)
  if (data.length !== 6 + nameBytes + 2 * count) throw new NbdProtocolError(`info request: ${count} items do not fill ${data.length - 6 - nameBytes} bytes`)
  const infos: number[] = []
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(6 + nameBytes + 2 * i))
  return { name, infos }
}

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name, queries.
export interface MetaContextRequest { name: string, queries: string[] }

export function decodeMetaContextRequest (data: Buffer): MetaContextRequest {
  let at = 0
  const need = (n: number, what: string): void => {
    if (at + n > data.length) throw new NbdProtocolError(`meta context request: ${what} runs past the ${data.length} bytes of option data`)
  }
  need(4, 'the name length')
  const nameBytes = data.readUInt32BE(at); at += 4
  need(nameBytes, 'the export name')
  const name = decodeString(data.subarray(at, at + nameBytes)); at += nameBytes
  need(4, 'the query count')
  const count = data.readUInt32BE(at); at += 4
  const queries: string[] = []
  for (let i = 0; i < count; i++) {
    need(4, `query ${i}'s length`)
    const qBytes = data.readUInt32BE(at); at += 4
    need(qBytes, `query ${i}`)
    queries.push(decodeString(data.subarray(at, at + qBytes))); at += qBytes
  }
  if (at !== data.length) throw new NbdProtocolError(`meta context request: ${data.length - at} bytes after the last query`)
  return { name, queries }
}

function decodeString (b: Buffer): string {
  if (b.length > NBD_STRING_BYTES_MAX) throw new NbdProtocolError(`a string of ${b.length} bytes (at most ${NBD_STRING_BYTES_MAX})`)
  const s = b.toString('utf8')
  if (s.includes('\0') || !Buffer.from(s, 'utf8').equals(b)) throw new NbdProtocolError('a string that is not NUL-free UTF-8')
  return s
}

export interface Request { magic: number, flags: number, type: number, cookie: bigint, offset: bigint, lengthBytes: number }

export function decodeRequest (b: Buffer): Request {
  return { magic: b.readUInt32BE(0), flags: b.readUInt16BE(4), type: b.readUInt16BE(6), cookie: b.readBigUInt64BE(8), offset: b.readBigUInt64BE(16), lengthBytes: b.readUInt32BE(24) }
}

// --- client-side encoders (tests and tools) ---------------------------------------------------

export function encodeOption (option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(NBD_OPTION_HEADER_BYTES + data.length)
  b.writeBigUInt64BE(NBD_IHAVEOPT, 0)
  b.writeUInt32BE(option, 8)
  b.writeUInt32BE(data.length, 12)
  data.copy(b, 16)
  return b
}

export function encodeInfoRequest (name: string, infos: number[]): Buffer {
  const n = Buffer.from(name, 'utf8')
  const b = Buffer.alloc(6 + n.length + 2 * infos.length)
  b.writeUInt32BE(n.length, 0)
  n.copy(b, 4)
  b.writeUInt16BE(infos.length, 4 + n.length)
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i))
  return b
}

export function encodeMetaContextRequest (name: string, queries: string[]): Buffer {
  const parts: Buffer[] = []
  const n = Buffer.from(name, 'utf8')
  const head = Buffer.alloc(4); head.writeUInt32BE(n.length, 0)
  const count = Buffer.alloc(4); count.writeUInt32BE(queries.length, 0)
  parts.push(head, n, count)
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8')
    const l = Buffer.alloc(4); l.writeUInt32BE(qb.length, 0)
    parts.push(l, qb)
  }
  return Buffer.concat(parts)
}

export function encodeRequest (r: Omit<Request, 'magic'> & { magic?: number }): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_HEADER_BYTES)
  b.writeUInt32BE(r.magic ?? NBD_REQUEST_MAGIC, 0)
  b.writeUInt16BE(r.flags, 4)
  b.writeUInt16BE(r.type, 6)
  b.writeBigUInt64BE(r.cookie, 8)
  b.writeBigUInt64BE(r.offset, 16)
  b.writeUInt32BE(r.lengthBytes, 24)
  return b
}
