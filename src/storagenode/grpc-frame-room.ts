// gRPC framing without a copy, for the data path's messages: a small, version-pinned hook into
// @grpc/grpc-js.
//
// grpc-js puts every message it sends behind a 5-byte header (compressed flag, length) by
// allocating message+5 bytes and copying the message into them: the client in the compression
// filter's IdentityHandler.writeMessage, the server in BaseServerInterceptingCall.serializeMessage.
// For a 1 MiB write that is a second copy of the payload and a second 1 MiB allocation, after the
// one io-codec.ts makes encoding it, per replica. io-codec.ts encodes into a buffer from
// `allocWithFrameRoom`, which keeps the header's 5 bytes free in front of the message; the hooks
// below write the header there and hand grpc-js the whole buffer: the same bytes on the wire,
// without the copy. Any other message (not from allocWithFrameRoom, or a compressed one) takes
// grpc-js's own code, unchanged; the size limits are checked by grpc-js after the hook as before.
//
// Why a hook: grpc-js has no public way to frame a message oneself (interceptors see the message
// before serialization, the serializer cannot return framed bytes, and a custom channel would
// replace far more). So the hook is pinned: it installs only on the grpc-js version it was read
// against (GRPC_JS_VERSION) and only when the two methods have the shape it expects; anything
// else leaves grpc-js alone (the copying path, correct and slower) and emits a process warning.
// test/grpc-frame-room.test.ts fails when the hook is not installed, so an upgrade of grpc-js
// cannot drop it unnoticed: read the two methods again, then move the pin.
//
// Not done: pooling the message buffers. grpc-js's RetryingCall (in the chain even with retries
// off) calls a write's callback on the next tick, before the bytes are on the socket, so the
// client cannot tell when a buffer is free again.
//
// Measured (docs/performance.md "Sequential writes: CPU per MiB", main's build interleaved, the
// machine at load 21-41): the agent's CPU per replicated 1 MiB write 0.63 of main's
// (bench/write-cpu.ts, TLS, 2 replicas), one client's per 1 MiB write 0.72 (bench/storage-stream.ts);
// a node's per 1 MiB read reply 0.82. The profile's framing copy (5.7 % of the agent's samples) is gone.
import { createRequire } from 'node:module'

export const GRPC_JS_VERSION = '1.14.7'
// grpc-js's frame header: 1 byte compressed flag, 4 bytes big-endian message length.
export const FRAME_HEADER_BYTES = 5

// message (what the serializer returned) → the buffer it sits in, header room included.
const rooms = new WeakMap<Buffer, Buffer>()
let status: { installed: boolean, why: string } | undefined
// Messages framed in place since the process started (tests check the hook is really taken).
export const frameRoomStats = { framedInPlace: 0 }

// A buffer of `bytes` for a message, with FRAME_HEADER_BYTES free in front of it (when the hook
// is installed): grpc-js then frames it in place.
export function allocWithFrameRoom (bytes: number): Buffer {
  if (status?.installed !== true) return Buffer.allocUnsafe(bytes)
  const whole = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bytes)
  const message = whole.subarray(FRAME_HEADER_BYTES)
  rooms.set(message, whole)
  return message
}

// The framed message (flag 0: not compressed) in the room in front of `message`, or undefined
// when it has none. A message sent twice is framed twice the same way.
function frameInPlace (message: Buffer): Buffer | undefined {
  const whole = rooms.get(message)
  if (whole === undefined) return undefined
  whole.writeUInt8(0, 0)
  whole.writeUInt32BE(message.length, 1)
  frameRoomStats.framedInPlace++
  return whole
}

type WriteMessage = (this: unknown, message: Buffer, compress: boolean) => Promise<Buffer>
type SerializeMessage = (this: { handler: { serialize: (value: unknown) => Buffer } }, value: unknown) => Buffer

// Installs the hooks once (idempotent); says whether they are in place, and if not why.
export function installFrameRoom (): { installed: boolean, why: string } {
  if (status !== undefined) return status
  status = tryInstall()
  if (!status.installed) process.emitWarning(`gRPC messages are framed by copying: ${status.why}`, { code: 'UKAI_GRPC_FRAME_ROOM' })
  return status
}

function tryInstall (): { installed: boolean, why: string } {
  const req = createRequire(require.resolve('@grpc/grpc-js'))
  const version = (req('../../package.json') as { version?: string }).version
  if (version !== GRPC_JS_VERSION) return { installed: false, why: `@grpc/grpc-js is ${String(version)}, the hook was written for ${GRPC_JS_VERSION} (src/storagenode/grpc-frame-room.ts)` }
  // Client: the identity handler is not exported; a compression filter made with no options has one.
  const { CompressionFilter } = req('./compression-filter') as { CompressionFilter?: new (opts: object, shared: object) => { sendCompression?: object } }
  const identity = CompressionFilter === undefined ? undefined : Object.getPrototypeOf(new CompressionFilter({}, {}).sendCompression) as { constructor: { name: string }, writeMessage?: WriteMessage } | undefined
  if (identity?.constructor.name !== 'IdentityHandler' || !Object.prototype.hasOwnProperty.call(identity, 'writeMessage')) {
    return { installed: false, why: 'grpc-js has no IdentityHandler.writeMessage where expected' }
  }
  // Server: responses are framed by serializeMessage, which serializes too.
  const { BaseServerInterceptingCall } = req('./server-interceptors') as { BaseServerInterceptingCall?: { prototype: { serializeMessage?: SerializeMessage } } }
  const server = BaseServerInterceptingCall?.prototype
  if (typeof server?.serializeMessage !== 'function' || !/this\.handler\.serialize\(/.test(server.serializeMessage.toString())) {
    return { installed: false, why: 'grpc-js has no BaseServerInterceptingCall.serializeMessage of the expected shape' }
  }
  const writeMessage = identity.writeMessage as WriteMessage
  identity.writeMessage = function (this: unknown, message: Buffer, compress: boolean): Promise<Buffer> {
    const framed = frameInPlace(message)
    return framed === undefined ? writeMessage.call(this, message, compress) : Promise.resolve(framed)
  }
  const serializeMessage = server.serializeMessage
  server.serializeMessage = function (value: unknown): Buffer {
    const message = this.handler.serialize(value)
    // Not ours: grpc-js's own framing, handed the message already serialized.
    return frameInPlace(message) ?? serializeMessage.call({ handler: { serialize: () => message } }, value)
  }
  return { installed: true, why: `framing in place on @grpc/grpc-js ${version}` }
}
