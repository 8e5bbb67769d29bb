// The IoBatch stream (several Io requests per message, docs/performance.md): a real storage server
// on 127.0.0.1, raw batches from the generated service and StorageClient's own batching. Checks
// that a batch is applied in its order (overlapping writes, byte for byte against a model), that a
// fence refuses exactly the requests of a batch that carry a stale lease epoch, and that the
// client really puts concurrent requests into shared messages.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { StorageClient } from '../src/storagenode/client'
import { StorageServer, startStorageServer } from '../src/storagenode/server'
import { IoRequestOut, IoResponse, MAX_MESSAGE_BYTES, storageService } from '../src/storagenode/wire'
import { isUkaiError } from '../src/errors'

const UUID = '7c1f0a42-5d3e-4b6a-8f90-333333333333'
const BLOCK_BYTES = 1024 * 1024

interface Teardown { teardown: (fn: () => unknown) => void }
interface Checker extends Teardown { ok: (v: unknown, msg: string) => unknown }

async function startNode (t: Teardown): Promise<StorageServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-batch-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const server = await startStorageServer({ nodeId: 'node-b', dataDir: dir, listen: '127.0.0.1:0' })
  t.teardown(() => server.close(0))
  return server
}

function connect (t: Teardown, server: StorageServer, windowSize?: number): StorageClient {
  const client = new StorageClient({ nodeId: 'node-b', address: server.address, windowSize })
  t.teardown(() => client.close())
  return client
}

function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

// One raw IoBatch stream: sends `batch` as one message and collects the answers by id.
async function sendBatch (t: Checker, server: StorageServer, batch: IoRequestOut[]): Promise<Map<number, IoResponse>> {
  const Service = storageService()
  const client = new Service(server.address, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_MESSAGE_BYTES })
  t.teardown(() => client.close())
  const call = (client as unknown as { IoBatch: () => grpc.ClientDuplexStream<IoRequestOut[], IoResponse[]> }).IoBatch()
  const answers = new Map<number, IoResponse>()
  let messages = 0
  await new Promise<void>((resolve, reject) => {
    call.on('data', (rs: IoResponse[]) => {
      messages++
      for (const r of rs) answers.set(r.id, r)
      if (answers.size === batch.length) { call.end(); resolve() }
    })
    call.on('error', reject)
    call.write(batch)
  })
  t.ok(messages >= 1 && messages <= batch.length, `${batch.length} answers came in ${messages} message(s)`)
  return answers
}

t.test('a raw batch of overlapping writes is applied in its order', async t => {
  const server = await startNode(t)
  const rand = rng(11)
  const model = Buffer.alloc(BLOCK_BYTES)
  const batch: IoRequestOut[] = []
  for (let i = 0; i < 120; i++) {
    const off = Math.floor(rand() * 8192)          // all within the first 12 KiB: they overlap
    const len = 1 + Math.floor(rand() * 4096)
    const data = Buffer.alloc(len, i + 1)
    data.copy(model, off)
    batch.push({ id: i + 1, write: { diskUuid: UUID, block: 0, epoch: 1, offset: off, data, leaseEpoch: 1 } })
  }
  const answers = await sendBatch(t, server, batch)
  t.equal([...answers.values()].filter(r => r.code !== '').length, 0, 'every write of the batch succeeded')
  const client = connect(t, server)
  const got = await client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 16384 })
  t.ok(got.equals(model.subarray(0, 16384)), 'the block reads as the writes applied in batch order')
})

t.test('a fence refuses exactly the requests of a batch that carry the stale epoch', async t => {
  const server = await startNode(t)
  const client = connect(t, server)
  await client.write({ diskUuid: UUID, block: 1, epoch: 1, offset: 0, data: Buffer.alloc(64, 0xee), leaseEpoch: 1 })
  t.equal(await client.fence({ diskUuid: UUID, leaseEpoch: 3 }), 3)
  // Interleaved: lease epochs 3 (current), 2 (stale), 4 (newer: raises the fence for the rest).
  const epochs = [3, 2, 3, 2, 4, 3, 2, 4]
  const batch: IoRequestOut[] = epochs.map((leaseEpoch, i) => ({ id: 100 + i, write: { diskUuid: UUID, block: 1, epoch: 1, offset: i * 8, data: Buffer.alloc(8, i + 1), leaseEpoch } }))
  const answers = await sendBatch(t, server, batch)
  // Once the epoch-4 write (request 4) raised the fence, epoch 3 is stale as well.
  const expected = ['', 'FENCED', '', 'FENCED', '', 'FENCED', 'FENCED', '']
  const want = Buffer.alloc(64, 0xee)
  epochs.forEach((leaseEpoch, i) => {
    t.equal(answers.get(100 + i)?.code, expected[i], `request ${i} (lease epoch ${leaseEpoch}): ${expected[i] === '' ? 'applied' : 'refused'}`)
    if (expected[i] === '') want.fill(i + 1, i * 8, i * 8 + 8)
  })
  const got = await client.read({ diskUuid: UUID, block: 1, epoch: 1, offset: 0, length: 64 })
  t.ok(got.equals(want), 'only the admitted writes landed')
})

t.test('StorageClient shares messages between concurrent requests, in call order', async t => {
  const server = await startNode(t)
  const client = connect(t, server)
  const rand = rng(5)
  const model = Buffer.alloc(BLOCK_BYTES)
  const writes: Array<Promise<string>> = []
  // Issued in one turn without awaiting: they go out in few messages, overlapping ones in order.
  for (let i = 0; i < 300; i++) {
    const off = Math.floor(rand() * (BLOCK_BYTES - 5000))
    const len = 1 + Math.floor(rand() * 4096)
    const data = Buffer.alloc(len, Math.floor(rand() * 256))
    data.copy(model, off)
    writes.push(client.write({ diskUuid: UUID, block: 2, epoch: 1, offset: off, data, leaseEpoch: 1 }))
  }
  await Promise.all(writes)
  const { messages, requests } = client.sentStats
  t.equal(requests, 300)
  t.ok(messages <= 300 / 8, `300 writes went out in ${messages} messages (window ${client.windowSize})`)
  const got = await client.read({ diskUuid: UUID, block: 2, epoch: 1, offset: 0, length: BLOCK_BYTES })
  t.ok(got.equals(model), 'the block matches the model byte for byte')
})

t.test('a stale lease epoch in a client batch fails exactly those calls', async t => {
  const server = await startNode(t)
  const client = connect(t, server)
  await client.fence({ diskUuid: UUID, leaseEpoch: 5 })
  const results = await Promise.allSettled([5, 4, 5, 1, 6].map((leaseEpoch, i) =>
    client.write({ diskUuid: UUID, block: 3, epoch: 1, offset: i * 4096, data: Buffer.alloc(4096, i + 1), leaseEpoch })))
  t.same(results.map(r => r.status === 'fulfilled' ? 'ok' : isUkaiError(r.reason, 'FENCED') ? 'FENCED' : String(r.reason)), ['ok', 'FENCED', 'ok', 'FENCED', 'ok'])
  const got = await client.read({ diskUuid: UUID, block: 3, epoch: 1, offset: 0, length: 5 * 4096 })
  const want = Buffer.alloc(5 * 4096)
  for (const i of [0, 2, 4]) want.fill(i + 1, i * 4096, (i + 1) * 4096)
  t.ok(got.equals(want), 'the refused writes left nothing behind')
  t.ok(client.sentStats.messages < client.sentStats.requests, 'the writes shared a message')
})

t.test('large writes split into messages of at most about IO_BATCH_BYTES', async t => {
  const server = await startNode(t)
  const client = connect(t, server)
  const sizes = [4 * 1024 * 1024, 4096, 900 * 1024, 900 * 1024, 4096, 2 * 1024 * 1024]
  const bufs = sizes.map((n, i) => Buffer.alloc(n, i + 1))
  let off = 0
  const offs = sizes.map(n => { const o = off; off += n; return o })
  await Promise.all(bufs.map((data, i) => client.write({ diskUuid: UUID, block: 4 + Math.floor(offs[i] / (8 * 1024 * 1024)), epoch: 1, offset: offs[i] % (8 * 1024 * 1024), data, leaseEpoch: 1 })))
  t.ok(client.sentStats.messages >= 4, `6 writes (${Math.round(off / 1024)} KiB) in ${client.sentStats.messages} messages`)
  for (let i = 0; i < sizes.length; i++) {
    const got = await client.read({ diskUuid: UUID, block: 4 + Math.floor(offs[i] / (8 * 1024 * 1024)), epoch: 1, offset: offs[i] % (8 * 1024 * 1024), length: sizes[i] })
    t.ok(got.equals(bufs[i]), `write ${i} (${sizes[i]} bytes) reads back`)
  }
})
