// The hand-written Io codec in src/storagenode/wire.ts against the generated one (protobufjs via
// @grpc/proto-loader, from the same .proto): each side decodes what the other encodes, for every
// op, with large numbers, empty and non-empty payloads, and unknown fields.
import t from 'tap'
import * as path from 'node:path'
import * as protoLoader from '@grpc/proto-loader'
import {
  PROTO_RELATIVE_PATH, decodeIoRequest, decodeIoRequestBatch, decodeIoResponse, decodeIoResponseBatch, encodeIoRequest, encodeIoRequestBatch,
  encodeIoResponse, encodeIoResponseBatch, type IoRequestOut
} from '../src/storagenode/wire'

// A fresh definition: the generated (protobufjs) serializers, as storageService() had them before.
const def = protoLoader.loadSync(path.join(__dirname, '..', PROTO_RELATIVE_PATH), { keepCase: false, longs: Number, defaults: true, oneofs: true })
const gen = (def['ukai.storage.v1.Storage'] as protoLoader.ServiceDefinition).Io
const genBatch = (def['ukai.storage.v1.Storage'] as protoLoader.ServiceDefinition).IoBatch
const BIG = 2 ** 53 - 1
const data = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251))

const requests: IoRequestOut[] = [
  { id: 1, read: { diskUuid: 'd-1', block: 0, epoch: 0, offset: 0, length: 0, absentMode: 0 } },
  { id: BIG, read: { diskUuid: 'disk_ü', block: BIG, epoch: 2 ** 40, offset: 127, length: 128, absentMode: 1 } },
  { id: 300, write: { diskUuid: 'x', block: 7, epoch: 1, offset: 4096, data, leaseEpoch: 9 } },
  { id: 2, write: { diskUuid: 'x', block: 0, epoch: 0, offset: 0, data: Buffer.alloc(0), leaseEpoch: 0 } },
  { id: 3, flush: { diskUuid: 'abc', leaseEpoch: 2 ** 33 } },
  { id: 4, discard: { diskUuid: 'abc', block: 1, epoch: 2, offset: 3, length: 4, leaseEpoch: 5 } }
]

t.test('requests: ours → generated and generated → ours', async t => {
  for (const req of requests) {
    const op = Object.keys(req).find(k => k !== 'id') as 'read' | 'write' | 'flush' | 'discard'
    const theirs = gen.requestDeserialize(encodeIoRequest(req)) as Record<string, any>
    t.equal(theirs.id, req.id)
    t.equal(theirs.op, op)
    t.same(theirs[op], (req as any)[op], `${op} decoded by the generated codec`)
    const ours = decodeIoRequest(gen.requestSerialize(req))
    t.equal(ours.id, req.id)
    t.equal(ours.op, op)
    t.same(ours[op], (req as any)[op], `${op} decoded by ours`)
  }
})

t.test('responses both ways, and unknown fields are skipped', async t => {
  for (const r of [{ id: 5, code: '', message: '', data, incarnation: '9f3a0c5e7d2b4a61' }, { id: BIG, code: 'FENCED', message: 'lease épo', data: Buffer.alloc(0), incarnation: '' }]) {
    t.same(gen.responseDeserialize(encodeIoResponse(r)), r)
    t.same(decodeIoResponse(gen.responseSerialize(r)), r)
  }
  // field 15 varint, field 16 length-delimited, field 17 fixed64, field 18 fixed32 (future additions)
  const extra = Buffer.from([0x78, 0x96, 0x01, 0x82, 0x01, 0x02, 0xaa, 0xbb, 0x89, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x95, 0x01, 1, 2, 3, 4])
  const r = { id: 6, code: 'X', message: 'm', data: Buffer.from('hi'), incarnation: '' }
  t.same(decodeIoResponse(Buffer.concat([encodeIoResponse(r), extra])), r)
  const req = decodeIoRequest(Buffer.concat([extra, encodeIoRequest(requests[2])]))
  t.same(req.write, (requests[2] as { write: unknown }).write)
  t.throws(() => decodeIoResponse(Buffer.from([0x22, 0x05, 1])), /truncated/)
})

t.test('batches both ways: every request and answer, in order; an empty batch', async t => {
  const theirs = genBatch.requestDeserialize(encodeIoRequestBatch(requests)) as { requests: Array<Record<string, any>> }
  t.equal(theirs.requests.length, requests.length)
  theirs.requests.forEach((r, i) => {
    const op = Object.keys(requests[i]).find(k => k !== 'id') as string
    t.equal(r.id, requests[i].id)
    t.same(r[op], (requests[i] as any)[op], `request ${i} (${op}) decoded by the generated codec`)
  })
  const ours = decodeIoRequestBatch(genBatch.requestSerialize({ requests }))
  t.same(ours.map(r => r.id), requests.map(r => r.id), 'ours keeps the order')
  ours.forEach((r, i) => t.same(r[r.op as 'read'], (requests[i] as any)[r.op as string], `request ${i} decoded by ours`))
  t.same(decodeIoRequestBatch(encodeIoRequestBatch([])), [])
  const rs = [{ id: 5, code: '', message: '', data, incarnation: 'ab' }, { id: BIG, code: 'FENCED', message: 'lease épo', data: Buffer.alloc(0), incarnation: '' }, { id: 7, code: '', message: '', data: Buffer.alloc(0), incarnation: '' }]
  t.same((genBatch.responseDeserialize(encodeIoResponseBatch(rs)) as { responses: unknown[] }).responses, rs)
  t.same(decodeIoResponseBatch(genBatch.responseSerialize({ responses: rs })), rs)
  // An answer with every field at its default is an empty embedded message: still one element.
  t.same(decodeIoResponseBatch(encodeIoResponseBatch([{ id: 0, code: '', message: '', data: Buffer.alloc(0) }])), [{ id: 0, code: '', message: '', data: Buffer.alloc(0), incarnation: '' }])
  t.throws(() => decodeIoRequestBatch(Buffer.from([0x0a, 0x05, 1])), /truncated/)
})
