// The hook that lets grpc-js frame the data path's messages without copying them
// (src/storagenode/grpc-frame-room.ts): it is installed on the grpc-js in use (this test fails
// when an upgrade of grpc-js leaves it out: read the two hooked methods again, then move the pin),
// it frames the codec's messages in place and with the bytes grpc-js's own framing gives, leaves
// every other message to grpc-js, and a real node and client move writes and reads of every size
// through it byte for byte.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { createRequire } from 'node:module'
import { FRAME_HEADER_BYTES, GRPC_JS_VERSION, allocWithFrameRoom, frameRoomStats, installFrameRoom } from '../src/storagenode/grpc-frame-room'
import { StorageClient } from '../src/storagenode/client'
import { startStorageServer } from '../src/storagenode/server'
import { encodeIoRequestBatch, storageService } from '../src/storagenode/wire'

const grpcRequire = createRequire(require.resolve('@grpc/grpc-js'))
const UUID = '7c1f0a42-5d3e-4b6a-8f90-444444444444'

interface WriteMessage { writeMessage: (m: Buffer, compress: boolean) => Promise<Buffer> }
function identityHandler (): WriteMessage {
  const { CompressionFilter } = grpcRequire('./compression-filter')
  return new CompressionFilter({}, {}).sendCompression as WriteMessage
}

// grpc-js's framing, as 1.14.7 writes it.
function framedByGrpc (m: Buffer): Buffer {
  const head = Buffer.alloc(FRAME_HEADER_BYTES)
  head.writeUInt32BE(m.length, 1)
  return Buffer.concat([head, m])
}

function pattern (bytes: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(bytes)
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed) & 255
  return b
}

t.test('the hook is installed on the grpc-js in use', async t => {
  t.equal((grpcRequire('../../package.json') as { version: string }).version, GRPC_JS_VERSION, 'grpc-js is the version the hook was written for')
  const s = installFrameRoom()
  t.ok(s.installed, s.why)
  t.same(installFrameRoom(), s, 'installing twice is a no-op')
})

t.test('client side: a codec message is framed in place, others as grpc-js does', async t => {
  installFrameRoom()
  const handler = identityHandler()
  const message = allocWithFrameRoom(70_000)
  pattern(70_000, 3).copy(message)
  const framed = await handler.writeMessage(message, false)
  t.ok(framed.equals(framedByGrpc(message)), 'the same bytes as grpc-js frames')
  t.equal(framed.buffer, message.buffer, 'no copy: the frame is the room in front of the message')
  t.equal(framed.byteOffset + FRAME_HEADER_BYTES, message.byteOffset)
  const other = pattern(10_000, 5)  // above Buffer's pool: its own memory
  const copied = await handler.writeMessage(other, false)
  t.ok(copied.equals(framedByGrpc(other)), 'any other message: grpc-js framing')
  t.not(copied.buffer, other.buffer, '… copied, as before')
  const empty = allocWithFrameRoom(0)
  t.ok((await handler.writeMessage(empty, false)).equals(Buffer.alloc(5)), 'an empty message: just the header')
})

t.test('server side: serializeMessage frames a codec message in place, others as grpc-js does', async t => {
  installFrameRoom()
  const { BaseServerInterceptingCall } = grpcRequire('./server-interceptors')
  const serializeMessage = BaseServerInterceptingCall.prototype.serializeMessage as (this: object, v: unknown) => Buffer
  const ours = allocWithFrameRoom(4096)
  pattern(4096, 7).copy(ours)
  const framed = serializeMessage.call({ handler: { serialize: () => ours } }, {})
  t.ok(framed.equals(framedByGrpc(ours)))
  t.equal(framed.buffer, ours.buffer, 'no copy')
  const theirs = pattern(300, 9)
  const copied = serializeMessage.call({ handler: { serialize: (v: unknown) => { t.equal(v, 'value'); return theirs } } }, 'value')
  t.ok(copied.equals(framedByGrpc(theirs)), 'any other message: grpc-js framing')
})

t.test('the codec encodes into frame room once the service is loaded', async t => {
  storageService()
  const before = frameRoomStats.framedInPlace
  const m = encodeIoRequestBatch([{ id: 1, write: { diskUuid: UUID, block: 0, epoch: 1, offset: 0, data: pattern(1024, 1), leaseEpoch: 1 } }])
  const framed = await identityHandler().writeMessage(m, false)
  t.equal(framed.buffer, m.buffer, 'an encoded batch is framed without a copy')
  t.equal(frameRoomStats.framedInPlace, before + 1)
})

t.test('a real node and client: writes and reads of every size through the hook, byte for byte', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-frame-room-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const server = await startStorageServer({ nodeId: 'node-f', dataDir: dir, listen: '127.0.0.1:0' })
  t.teardown(() => server.close(0))
  const client = new StorageClient({ nodeId: 'node-f', address: server.address })
  t.teardown(() => client.close())
  const before = frameRoomStats.framedInPlace
  const sizes = [1, 4096, 65_536 + 7, 1024 * 1024, 4 * 1024 * 1024]
  const datas = sizes.map((n, i) => pattern(n, i))
  // Concurrently: several writes share a message (a batch), the large ones go alone.
  await Promise.all(datas.map((data, i) => client.write({ diskUuid: UUID, block: i, epoch: 1, offset: 0, data, leaseEpoch: 1 })))
  const got = await Promise.all(datas.map((data, i) => client.read({ diskUuid: UUID, block: i, epoch: 1, offset: 0, length: data.length })))
  got.forEach((g, i) => t.ok(g.equals(datas[i]), `${sizes[i]} bytes read back as written`))
  t.ok(frameRoomStats.framedInPlace - before >= 4, `requests and replies framed in place (${frameRoomStats.framedInPlace - before})`)
})
