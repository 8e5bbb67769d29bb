// A real storage server on 127.0.0.1 port 0 and a StorageClient: model checks over the stream,
// versions, sparseness, fencing across restart, quota, pipelining, server death, deadlines.
import t from 'tap'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import { StorageClient } from '../src/storagenode/client'
import { StorageServer, startStorageServer } from '../src/storagenode/server'

const UUID = '7c1f0a42-5d3e-4b6a-8f90-222222222222'
const BLOCK_BYTES = 1024 * 1024

interface Teardown { teardown: (fn: () => unknown) => void }

function tempDir (t: Teardown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-grpc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function startNode (t: Teardown, dataDir: string, opts: { listen?: string, capacityBytes?: number } = {}): Promise<StorageServer> {
  const server = await startStorageServer({ nodeId: 'node-a', dataDir, listen: opts.listen ?? '127.0.0.1:0', capacityBytes: opts.capacityBytes })
  t.teardown(() => server.close(0))
  return server
}

function connect (t: Teardown, server: { address: string }, opts: { windowSize?: number, callTimeoutMs?: number, maxQueued?: number } = {}): StorageClient {
  const client = new StorageClient({ nodeId: 'node-a', address: server.address, ...opts })
  t.teardown(() => client.close())
  return client
}

function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

t.test('concurrent random unaligned I/O over one stream matches a model', async t => {
  const server = await startNode(t, tempDir(t))
  const client = connect(t, server)
  t.match(server.address, /^127\.0\.0\.1:\d+$/)
  const rand = rng(7)
  const blocks = 3
  const model = Array.from({ length: blocks }, () => Buffer.alloc(BLOCK_BYTES))
  // Issued without awaiting: overlapping writes must still apply in call order.
  const writes = []
  for (let i = 0; i < 400; i++) {
    const b = Math.floor(rand() * blocks)
    const off = Math.floor(rand() * (BLOCK_BYTES - 1))
    const len = 1 + Math.floor(rand() * Math.min(50_000, BLOCK_BYTES - off))
    const data = Buffer.alloc(len, Math.floor(rand() * 256))
    data[0] = i & 0xff
    data.copy(model[b], off)
    writes.push(client.write({ diskUuid: UUID, block: b, epoch: 1, offset: off, data, leaseEpoch: 1 }))
  }
  await Promise.all(writes)
  const reads = []
  for (let i = 0; i < 200; i++) {
    const b = Math.floor(rand() * (blocks + 1))
    const off = Math.floor(rand() * BLOCK_BYTES)
    const len = Math.floor(rand() * 100_000)
    const want = Buffer.alloc(len)
    if (b < blocks) model[b].copy(want, 0, off, Math.min(off + len, BLOCK_BYTES))
    reads.push(client.read({ diskUuid: UUID, block: b, epoch: 1, offset: off, length: len }).then(got => got.equals(want)))
  }
  t.notOk((await Promise.all(reads)).includes(false), 'every read matched the model')
})

t.test('versions, sparseness, listBlocks, blockInfo, flush, deleteDisk', async t => {
  const server = await startNode(t, tempDir(t))
  const client = connect(t, server)
  const d = { diskUuid: UUID, block: 2, leaseEpoch: 1 }
  await client.write({ ...d, epoch: 1, offset: 10, data: Buffer.from('old') })
  await client.write({ ...d, epoch: 2, offset: 10, data: Buffer.from('new') })
  t.equal((await client.read({ ...d, epoch: 1, offset: 10, length: 3 })).toString(), 'old')
  t.equal((await client.read({ ...d, epoch: 2, offset: 10, length: 3 })).toString(), 'new')
  await client.write({ ...d, block: 9, epoch: 1, offset: 32 * 1024 * 1024, data: Buffer.alloc(4096, 1) })
  const [v] = await client.blockInfo({ diskUuid: UUID, block: 9 })
  t.equal(v.sizeBytes, 32 * 1024 * 1024 + 4096)
  t.ok(v.allocatedBytes <= 64 * 1024, `sparse: ${v.allocatedBytes} bytes allocated`)
  t.same(await client.listBlocks({ diskUuid: UUID }), [{ block: 2, epochs: [1, 2] }, { block: 9, epochs: [1] }])
  await client.flush({ diskUuid: UUID, leaseEpoch: 1 })
  await client.discard({ ...d, epoch: 2, offset: 0, length: 4096 })
  t.same(await client.read({ ...d, epoch: 2, offset: 10, length: 3 }), Buffer.alloc(3))
  const before = await client.stat()
  t.equal(before.nodeId, 'node-a')
  t.ok(before.usedBytes > 0)
  t.ok(await client.deleteDisk({ diskUuid: UUID }) > 0)
  const after = await client.stat()
  t.equal(after.usedBytes, 0, 'deleteDisk frees the space')
  t.same(await client.listBlocks({ diskUuid: UUID }), [])
  t.same(await client.read({ ...d, epoch: 1, offset: 10, length: 3 }), Buffer.alloc(3))
})

t.test('fencing through the wire survives a server restart', async t => {
  const dir = tempDir(t)
  let server = await startNode(t, dir)
  const port = server.port
  let client = connect(t, server)
  const w = { diskUuid: UUID, block: 0, epoch: 1, offset: 0, data: Buffer.from('x') }
  await client.write({ ...w, leaseEpoch: 3 })
  await t.rejects(client.write({ ...w, leaseEpoch: 2 }), { code: 'FENCED', message: /^node-a: / })
  t.equal(await client.fence({ diskUuid: UUID, leaseEpoch: 6 }), 6)
  t.equal(await client.fence({ diskUuid: UUID, leaseEpoch: 1 }), 6, 'never lowers')
  await t.rejects(client.flush({ diskUuid: UUID, leaseEpoch: 5 }), { code: 'FENCED' })
  await server.close()
  await client.close()
  server = await startNode(t, dir, { listen: `127.0.0.1:${port}` })
  client = connect(t, server)
  await t.rejects(client.write({ ...w, leaseEpoch: 5 }), { code: 'FENCED' })
  await client.write({ ...w, leaseEpoch: 6 })
})

t.test('capacity quota gives NO_SPACE without partial writes', async t => {
  const server = await startNode(t, tempDir(t), { capacityBytes: 1024 * 1024 })
  const client = connect(t, server)
  const data = Buffer.alloc(256 * 1024, 5)
  const results = await Promise.allSettled(Array.from({ length: 8 }, async (_, i) =>
    await client.write({ diskUuid: UUID, block: i, epoch: 1, offset: 0, data, leaseEpoch: 1 })))
  const failed = results.filter(r => r.status === 'rejected') as PromiseRejectedResult[]
  t.ok(failed.length >= 4, `${failed.length} writes refused`)
  t.equal(failed[0].reason.code, 'NO_SPACE')
  t.match(failed[0].reason.message, /node-a.*1048576/)
  for (let i = 0; i < 8; i++) {
    const got = await client.read({ diskUuid: UUID, block: i, epoch: 1, offset: 0, length: data.length })
    t.ok(results[i].status === 'fulfilled' ? got.equals(data) : got.equals(Buffer.alloc(data.length)), `block ${i} all or nothing`)
  }
  const st = await client.stat()
  t.equal(st.capacityBytes, 1024 * 1024)
  t.ok(st.usedBytes <= st.capacityBytes)
  t.equal(st.freeBytes, st.capacityBytes - st.usedBytes)
})

t.test('pipelining: 2000 concurrent 4 KiB writes through one client', async t => {
  const server = await startNode(t, tempDir(t))
  const client = connect(t, server, { windowSize: 32, maxQueued: 2048 })
  const n = 2000
  const page = (i: number): Buffer => { const b = Buffer.alloc(4096, i & 0xff); b.writeUInt32LE(i, 0); return b }
  // Requests go out at the end of the turn that queued them (client.ts): sample every turn.
  let peak = 0
  let sampling = true
  const sample = (): void => { peak = Math.max(peak, client.inFlight); if (sampling) setImmediate(sample) }
  setImmediate(sample)
  const writes = []
  for (let i = 0; i < n; i++) {
    writes.push(client.write({ diskUuid: UUID, block: i >> 8, epoch: 1, offset: (i & 255) * 4096, data: page(i), leaseEpoch: 1 }))
  }
  await Promise.all(writes)
  sampling = false
  t.equal(peak, 32, 'window bounds requests in flight')
  t.equal(client.inFlight, 0)
  const reads = await Promise.all(Array.from({ length: n }, async (_, i) =>
    await client.read({ diskUuid: UUID, block: i >> 8, epoch: 1, offset: (i & 255) * 4096, length: 4096 })))
  t.notOk(reads.some((b, i) => !b.equals(page(i))), 'all 2000 pages verify')
  t.ok(server.stats().requests >= 2 * n)

  // The queue behind the window is bounded: beyond it requests are refused at once (the window's
  // 4 count as sent though they go out at the end of the turn).
  const small = connect(t, server, { windowSize: 4, maxQueued: 10 })
  const burst = await Promise.allSettled(Array.from({ length: 30 }, async () => await small.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 1 })))
  t.equal(burst.filter(r => r.status === 'fulfilled').length, 14)
  t.ok(burst.every(r => r.status === 'fulfilled' || r.reason.code === 'UNAVAILABLE'))
})

t.test('server death fails in-flight requests with UNAVAILABLE; client recovers after restart', async t => {
  const dir = tempDir(t)
  const server = await startNode(t, dir)
  const port = server.port
  const client = connect(t, server, { callTimeoutMs: 2000 })
  await client.write({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, data: Buffer.alloc(65536, 3), leaseEpoch: 1 })
  const started = Date.now()
  const inflight = Array.from({ length: 200 }, async () => await client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 65536 }))
  const settling = Promise.allSettled(inflight)
  await server.close(0)
  const settled = await settling
  const codes = new Set(settled.map(r => r.status === 'fulfilled' ? 'ok' : r.reason.code))
  t.ok([...codes].every(c => c === 'ok' || c === 'UNAVAILABLE'), `outcomes: ${[...codes].join(',')}`)
  t.ok(codes.has('UNAVAILABLE'), 'some requests were cut off')
  // Bounded by the call deadline (2 s), not the 10 s default: generous for a loaded machine.
  t.ok(Date.now() - started < 8000, `failed within the deadline (${Date.now() - started} ms)`)
  await t.rejects(client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 1 }), { code: 'UNAVAILABLE', message: /node-a/ })
  await t.rejects(client.stat(), { code: 'UNAVAILABLE' })

  await startNode(t, dir, { listen: `127.0.0.1:${port}` })
  let got: Buffer | undefined
  for (let i = 0; i < 50 && got === undefined; i++) {
    try { got = await client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 4 }) } catch { await new Promise(resolve => setTimeout(resolve, 100)) }
  }
  t.same(got, Buffer.alloc(4, 3), 'works again after restart')
})

t.test('a silent peer times out with UNAVAILABLE naming the node and address', async t => {
  const sockets: net.Socket[] = []
  const blackHole = net.createServer(s => { sockets.push(s) })
  await new Promise<void>(resolve => blackHole.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { sockets.forEach(s => s.destroy()); blackHole.close() })
  const address = `127.0.0.1:${(blackHole.address() as net.AddressInfo).port}`
  const client = connect(t, { address }, { callTimeoutMs: 300 })
  const started = Date.now()
  await t.rejects(client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 1 }), { code: 'UNAVAILABLE', message: new RegExp(`node-a.*${address}`) })
  await t.rejects(client.fence({ diskUuid: UUID, leaseEpoch: 1 }), { code: 'UNAVAILABLE' })
  // Two calls with a 300 ms deadline, not the 10 s default: generous for a loaded machine.
  t.ok(Date.now() - started < 8000, `gave up after ${Date.now() - started} ms`)
})

t.test('bad arguments map to BAD_ARGUMENT; the stream survives them', async t => {
  const server = await startNode(t, tempDir(t))
  const client = connect(t, server)
  await t.rejects(client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 4 * 1024 * 1024 + 1 }), { code: 'BAD_ARGUMENT' })
  await t.rejects(client.read({ diskUuid: '../../etc', block: 0, epoch: 1, offset: 0, length: 1 }), { code: 'BAD_ARGUMENT' })
  await t.rejects(client.write({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, data: Buffer.alloc(4 * 1024 * 1024 + 1), leaseEpoch: 1 }), { code: 'BAD_ARGUMENT' })
  await t.rejects(client.fence({ diskUuid: 'a/b', leaseEpoch: 1 }), { code: 'BAD_ARGUMENT', message: /^node-a: / })
  await t.rejects(client.blockInfo({ diskUuid: '', block: 0 }), { code: 'BAD_ARGUMENT' })
  t.same(await client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 4 * 1024 * 1024 }), Buffer.alloc(4 * 1024 * 1024), '4 MiB read is fine')
  t.equal(server.stats().errors, 4)
})

t.test('close is idempotent and refuses later calls', async t => {
  const server = await startNode(t, tempDir(t))
  const client = new StorageClient({ nodeId: 'node-a', address: server.address })
  await client.stat()
  await client.close()
  await client.close()
  await t.rejects(client.stat(), { code: 'UNAVAILABLE' })
  await t.rejects(client.read({ diskUuid: UUID, block: 0, epoch: 1, offset: 0, length: 1 }), { code: 'UNAVAILABLE' })
  await server.close()
  await server.close()
})
