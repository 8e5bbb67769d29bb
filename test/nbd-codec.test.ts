// The NBD codec (src/nbd/protocol.ts) byte for byte against doc/proto.md's layouts, both ways
// where the server also parses; the error table; block-status runs; socket modes; the reader.
import { PassThrough } from 'node:stream'
import t from 'tap'
import { UkaiError, UkaiErrorCode } from '../src/errors'
import { silentLogger } from '../src/log'
import { runsFromBlocks } from '../src/vdisk/allocation'
import { ByteReader } from '../src/nbd/byte-reader'
import { toNbdError } from '../src/nbd/nbd-errno'
import * as P from '../src/nbd/protocol'
import { socketMode } from '../src/nbd/server'

t.test('constants are the spec\'s', async (t) => {
  t.equal(Buffer.from(P.NBD_MAGIC.toString(16), 'hex').toString(), 'NBDMAGIC')
  t.equal(Buffer.from(P.NBD_IHAVEOPT.toString(16), 'hex').toString(), 'IHAVEOPT')
  t.equal(P.NBD_OPT_REPLY_MAGIC, 0x3e889045565a9n)
  t.same([P.NBD_REQUEST_MAGIC, P.NBD_SIMPLE_REPLY_MAGIC, P.NBD_STRUCTURED_REPLY_MAGIC], [0x25609513, 0x67446698, 0x668e33ef])
  t.same([P.NBD_OPT_EXPORT_NAME, P.NBD_OPT_ABORT, P.NBD_OPT_LIST, P.NBD_OPT_STARTTLS, P.NBD_OPT_INFO, P.NBD_OPT_GO, P.NBD_OPT_STRUCTURED_REPLY, P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT], [1, 2, 3, 5, 6, 7, 8, 9, 10])
  t.same([P.NBD_REP_ERR_UNSUP, P.NBD_REP_ERR_INVALID, P.NBD_REP_ERR_UNKNOWN, P.NBD_REP_ERR_TOO_BIG], [2 ** 31 + 1, 2 ** 31 + 3, 2 ** 31 + 6, 2 ** 31 + 9])
  t.same([P.NBD_FLAG_READ_ONLY, P.NBD_FLAG_SEND_FLUSH, P.NBD_FLAG_SEND_FUA, P.NBD_FLAG_SEND_TRIM, P.NBD_FLAG_SEND_WRITE_ZEROES, P.NBD_FLAG_SEND_DF, P.NBD_FLAG_CAN_MULTI_CONN, P.NBD_FLAG_SEND_FAST_ZERO], [2, 4, 8, 32, 64, 128, 256, 2048])
  t.same([P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_DISC, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS], [0, 1, 2, 3, 4, 5, 6, 7])
  t.same([P.NBD_REPLY_TYPE_OFFSET_DATA, P.NBD_REPLY_TYPE_OFFSET_HOLE, P.NBD_REPLY_TYPE_BLOCK_STATUS, P.NBD_REPLY_TYPE_ERROR, P.NBD_REPLY_TYPE_ERROR_OFFSET], [1, 2, 5, 32769, 32770])
  t.same([P.NBD_EPERM, P.NBD_EIO, P.NBD_ENOMEM, P.NBD_EINVAL, P.NBD_ENOSPC, P.NBD_EOVERFLOW, P.NBD_ENOTSUP, P.NBD_ESHUTDOWN], [1, 5, 12, 22, 28, 75, 95, 108])
})

t.test('handshake encodings', async (t) => {
  t.same(P.encodeGreeting(3), Buffer.concat([Buffer.from('NBDMAGICIHAVEOPT'), Buffer.from([0, 3])]), 'greeting')
  const r = P.encodeOptionReply(P.NBD_OPT_GO, P.NBD_REP_ERR_UNKNOWN, Buffer.from('no'))
  t.same(r.subarray(0, 8), Buffer.from('0003e889045565a9', 'hex'), 'option reply magic')
  t.same([r.readUInt32BE(8), r.readUInt32BE(12), r.readUInt32BE(16), r.subarray(20).toString()], [7, 0x80000006, 2, 'no'])
  t.same(P.encodeInfoExport(2 ** 40 + 1, 0x1ed), Buffer.from('0000' + '0000010000000001' + '01ed', 'hex'), 'NBD_INFO_EXPORT: type, 64-bit size, flags (12 bytes)')
  t.same(P.encodeInfoBlockSize({ minimumBytes: 1, preferredBytes: 4096, maximumPayloadBytes: 1 << 25 }), Buffer.from('0003' + '00000001' + '00001000' + '02000000', 'hex'), 'NBD_INFO_BLOCK_SIZE (14 bytes)')
  t.same(P.encodeServerReplyData('vm'), Buffer.from('00000002766d', 'hex'), 'NBD_REP_SERVER: length, name')
  t.same(P.encodeMetaContextReplyData(1, 'base:allocation').subarray(0, 4), Buffer.from('00000001', 'hex'), 'meta context id')
  t.equal(P.encodeExportNameReply(512, 1, false).length, 134, 'EXPORT_NAME reply with 124 zero bytes')
  t.equal(P.encodeExportNameReply(512, 1, true).length, 10, 'and without')
})

t.test('option data decoding: both ways, and malformed data refused', async (t) => {
  t.same(P.decodeInfoRequest(P.encodeInfoRequest('vm@s1', [3, 1])), { name: 'vm@s1', infos: [3, 1] })
  t.same(P.decodeInfoRequest(P.encodeInfoRequest('', [])), { name: '', infos: [] })
  t.throws(() => P.decodeInfoRequest(Buffer.from([0, 0, 0, 9, 1])), P.NbdProtocolError, 'too short')
  t.throws(() => P.decodeInfoRequest(Buffer.from([0, 0, 0, 1, 0x61, 0, 2, 0, 3])), P.NbdProtocolError, 'count does not fill the data')
  t.throws(() => P.decodeInfoRequest(P.encodeInfoRequest('a\0b', [])), P.NbdProtocolError, 'NUL in a name')
  t.throws(() => P.decodeInfoRequest(P.encodeInfoRequest('x'.repeat(4097), [])), P.NbdProtocolError, 'a name over 4096 bytes')
  const bad = P.encodeInfoRequest('x', []); bad[4] = 0xff
  t.throws(() => P.decodeInfoRequest(Buffer.concat([bad, Buffer.from([0, 0])]).subarray(0, bad.length)), P.NbdProtocolError, 'invalid UTF-8')
  t.same(P.decodeMetaContextRequest(P.encodeMetaContextRequest('vm', ['base:allocation', 'qemu:x'])), { name: 'vm', queries: ['base:allocation', 'qemu:x'] })
  t.same(P.decodeMetaContextRequest(P.encodeMetaContextRequest('vm', [])), { name: 'vm', queries: [] })
  const meta = P.encodeMetaContextRequest('vm', ['base:allocation'])
  t.throws(() => P.decodeMetaContextRequest(meta.subarray(0, meta.length - 1)), P.NbdProtocolError, 'a query past the end')
  t.throws(() => P.decodeMetaContextRequest(Buffer.concat([meta, Buffer.from([0])])), P.NbdProtocolError, 'bytes after the last query')
  const o = P.decodeOptionHeader(P.encodeOption(P.NBD_OPT_LIST, Buffer.from('ab')))
  t.same(o, { magic: P.NBD_IHAVEOPT, option: 3, lengthBytes: 2 })
})

t.test('transmission encodings', async (t) => {
  const req = { flags: 5, type: 1, cookie: 0xfedcba9876543210n, offset: 2n ** 63n + 7n, lengthBytes: 0xffffffff }
  const enc = P.encodeRequest(req)
  t.equal(enc.length, 28)
  t.same(P.decodeRequest(enc), { magic: P.NBD_REQUEST_MAGIC, ...req }, 'request round trip, 64-bit cookie and offset')
  t.same(P.encodeSimpleReply(9n, 22), Buffer.from('67446698' + '00000016' + '0000000000000009', 'hex'), 'simple reply')
  const data = P.encodeOffsetDataHeader(9n, 1, 4096, 512)
  t.same(data, Buffer.from('668e33ef' + '0001' + '0001' + '0000000000000009' + '00000208' + '0000000000001000', 'hex'), 'OFFSET_DATA header: length counts the offset')
  const hole = P.encodeOffsetHole(9n, 1, 0, 4096)
  t.same([hole.readUInt16BE(6), hole.readUInt32BE(16), hole.readUInt32BE(28)], [2, 12, 4096], 'OFFSET_HOLE')
  const err = P.encodeErrorChunk(9n, 1, 28, 'full')
  t.same([err.readUInt16BE(6), err.readUInt32BE(16), err.readUInt32BE(20), err.readUInt16BE(24), err.subarray(26).toString()], [32769, 10, 28, 4, 'full'], 'error chunk')
  const long = P.encodeErrorChunk(9n, 1, 5, 'é'.repeat(3000))
  t.ok(long.readUInt16BE(24) <= 4096 && long.subarray(26).toString('utf8') === 'é'.repeat(2048), 'a long message is cut at 4096 bytes, on a character boundary')
  const bs = P.encodeBlockStatusChunk(9n, 1, 1, [{ lengthBytes: 1 << 20, flags: 3 }, { lengthBytes: 4096, flags: 0 }])
  t.same([bs.readUInt16BE(6), bs.readUInt32BE(16), bs.readUInt32BE(20), bs.readUInt32BE(24), bs.readUInt32BE(28), bs.readUInt32BE(32), bs.readUInt32BE(36)], [5, 20, 1, 1 << 20, 3, 4096, 0], 'block status chunk: context id, then (length, flags) pairs')
})

t.test('every UkaiError code maps to an NBD error value', async (t) => {
  const allowed = new Set([P.NBD_EPERM, P.NBD_EIO, P.NBD_ENOMEM, P.NBD_EINVAL, P.NBD_ENOSPC, P.NBD_EOVERFLOW, P.NBD_ENOTSUP, P.NBD_ESHUTDOWN])
  const codes: UkaiErrorCode[] = ['BAD_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'NOT_ENOUGH_NODES', 'ZK_UNAVAILABLE', 'ZK_CONFLICT', 'ZK_AUTH', 'FENCED', 'LEASE_HELD', 'BUSY', 'OUT_OF_RANGE', 'NO_SPACE', 'UNAVAILABLE', 'IO_ERROR', 'READ_ONLY', 'DATA_DIR', 'CORRUPT_STREAM', 'WRONG_BASE', 'NOT_SUPPORTED', 'NO_ATTRIBUTE', 'TOO_BIG', 'QUOTA_EXCEEDED', 'PERMISSION_DENIED', 'INTERNAL']
  for (const code of codes) t.ok(allowed.has(toNbdError(new UkaiError(code, 'x'), silentLogger, 'test')), code)
  t.equal(toNbdError(new UkaiError('READ_ONLY', 'x'), silentLogger, 'w'), P.NBD_EPERM, 'read-only: EPERM')
  t.equal(toNbdError(new UkaiError('NO_SPACE', 'x'), silentLogger, 'w'), P.NBD_ENOSPC, 'full: ENOSPC')
  t.equal(toNbdError(new TypeError('bug'), silentLogger, 'w'), P.NBD_EIO, 'a bug: EIO')
})

t.test('block-status runs from written blocks', async (t) => {
  const w = new Set([0, 1, 4])
  t.same(runsFromBlocks(w, 100, 1000, 0, 1000), [
    { offset: 0, lengthBytes: 200, hole: false },
    { offset: 200, lengthBytes: 200, hole: true },
    { offset: 400, lengthBytes: 100, hole: false },
    { offset: 500, lengthBytes: 500, hole: true }
  ])
  t.same(runsFromBlocks(w, 100, 1000, 150, 10), [{ offset: 150, lengthBytes: 50, hole: false }], 'from inside a run; one run covers the request')
  t.same(runsFromBlocks(w, 100, 950, 250, 600), [{ offset: 250, lengthBytes: 150, hole: true }, { offset: 400, lengthBytes: 100, hole: false }, { offset: 500, lengthBytes: 450, hole: true }], 'a disk size that is no multiple of the block size')
  t.same(runsFromBlocks(new Set(), 100, 1000, 0, 1), [{ offset: 0, lengthBytes: 1000, hole: true }], 'the last run may go past the request')
})

t.test('socket modes follow who may write the disk', async (t) => {
  t.equal(socketMode({ uid: 0, gid: 0, mode: 0o660 }), 0o660)
  t.equal(socketMode({ uid: 0, gid: 0, mode: 0o640 }), 0o600, 'a group that may only read cannot connect')
  t.equal(socketMode({ uid: 0, gid: 0, mode: 0o666 }), 0o666)
  t.equal(socketMode({ uid: 0, gid: 0, mode: 0o444 }), 0, 'nobody may write: nobody connects')
})

t.test('the byte reader: exact lengths across chunks, end of stream, skip', async (t) => {
  const s = new PassThrough()
  const r = new ByteReader(s, 8)
  s.write(Buffer.from('abc')); s.write(Buffer.from('defgh'))
  t.equal((await r.read(4))?.toString(), 'abcd')
  const pending = r.read(6)
  s.write(Buffer.from('ijklmnop'))
  t.equal((await pending)?.toString(), 'efghij')
  t.equal(await r.skip(3), true)
  t.equal((await r.read(3))?.toString(), 'nop')
  const big = r.read(20)
  s.write(Buffer.alloc(20, 1))
  t.same(await big, Buffer.alloc(20, 1), 'a read larger than the high-water mark')
  s.end(Buffer.from('xy'))
  t.equal(await r.read(3), null, 'the stream ended first')
})
