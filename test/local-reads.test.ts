// Short-circuit reads: an agent on the same host as storage nodes reads their block files
// directly. Every read is checked byte for byte against a model, and each test proves which path
// served it (the agent's localReadBytes counter; nodes SIGSTOPped while cached reads go on).
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { StorageClient } from '../src/storagenode/client'
import { LOCAL_READ_TOKEN_FILE } from '../src/storagenode/local-read-token'
import { AgentFixture, NodeFixture, TestLike, fuseUnavailable, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { cliOk, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { until, untilValue } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

const KiB = 1024
const MiB = 1024 * KiB
const BLOCK = 256 * KiB
const SIZE = 8 * MiB
const HOST = 'hv-a'
const RTT_MS = '200'  // the agent publishes its I/O counters with each round-trip report

const execFileP = promisify(execFile)
const skip = fuseUnavailable() ?? missingCli('mount') ?? undefined

interface Io { readBytes: number, writeBytes: number, localReadBytes?: number }

async function ioOf (meta: MetaStore, host: string, disk: string): Promise<Io | undefined> {
  return (await meta.listRtts()).find(r => r.host === host)?.io?.[disk]
}

// Two nodes on HOST, a mount agent there, a disk on both nodes.
async function setup (t: TestLike & Parameters<typeof cliOk>[0], opts: { agentArgs?: string[], beforeAgent?: (nodes: NodeFixture[]) => void, blockSize?: string } = {}): Promise<{ zk: string, nodes: NodeFixture[], agent: AgentFixture, meta: MetaStore, file: string }> {
  const zkf = await startZk(t)
  const zk = zkf.connectString
  const nodes = await Promise.all(['a1', 'a2'].map(async id => await startNode(t, { zk, id, site: 'site-a', extraArgs: ['--host', HOST] })))
  opts.beforeAgent?.(nodes)
  const agent = await startAgent(t, { zk, host: HOST, site: 'site-a', extraArgs: ['--rtt-interval-ms', RTT_MS, ...(opts.agentArgs ?? [])] })
  await cliOk(t, ['disk', 'create', 'vol', '--size', '8M', '--block-size', opts.blockSize ?? '256K', '--nodes', 'a1,a2'], zk)
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  return { zk, nodes, agent, meta, file: path.join(agent.mountPoint, 'vol') }
}

// localReadBytes of vol as of now: from a report measured after this call began (the agent
// publishes cumulative counters).
async function settledLocalBytes (meta: MetaStore): Promise<number> {
  const since = Date.now()
  return await untilValue('a fresh report', async () => {
    const r = (await meta.listRtts()).find(r => r.host === HOST)
    return r !== undefined && r.measuredAtMs > since ? r.io?.vol?.localReadBytes ?? 0 : undefined
  }, 15_000, 50)
}

async function pread (fh: fs.promises.FileHandle, off: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len)
  const { bytesRead } = await fh.read(buf, 0, len, off)
  return buf.subarray(0, bytesRead)
}

// Random unaligned reads, some across block boundaries, compared with the model.
async function randomReadsMatch (fh: fs.promises.FileHandle, model: Buffer, rand: () => number, count: number): Promise<string | null> {
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(rand() * (rand() < 0.5 ? 4 * KiB : 3 * BLOCK))
    const off = Math.floor(rand() * (model.length - len))
    const got = await pread(fh, off, len)
    if (!got.equals(model.subarray(off, off + len))) return `read of ${len} bytes at ${off} differs from the model`
  }
  return null
}

t.test('LocateBlock names the version file a read at an epoch uses', { skip: missingCli('storagenode') ?? undefined }, async (t) => {
  const zk = await startZk(t)
  const node = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const client = new StorageClient({ nodeId: 'a1', address: node.address })
  t.teardown(() => client.close())
  const uuid = 'locate-test'
  const a = randomBytes(rng(1), 5000)
  const b = randomBytes(rng(2), 3000)
  await client.write({ diskUuid: uuid, block: 3, epoch: 1, offset: 100, data: a, leaseEpoch: 1 })
  await client.write({ diskUuid: uuid, block: 3, epoch: 3, offset: 0, data: b, leaseEpoch: 1 })
  t.same(await client.locateBlock({ diskUuid: uuid, block: 3, epoch: 0 }), { found: false, epoch: 0, path: '' }, 'nothing at or below epoch 0')
  t.same(await client.locateBlock({ diskUuid: uuid, block: 3, epoch: 2 }), { found: true, epoch: 1, path: `disks/${uuid}/3.1` }, 'epoch 2 reads version 1')
  t.same(await client.locateBlock({ diskUuid: uuid, block: 3, epoch: 9 }), { found: true, epoch: 3, path: `disks/${uuid}/3.3` }, 'epoch 9 reads version 3')
  t.same(await client.locateBlock({ diskUuid: uuid, block: 4, epoch: 9 }), { found: false, epoch: 0, path: '' }, 'an unwritten block has none')
  t.same(await client.locateBlock({ diskUuid: 'no-such-disk', block: 0, epoch: 1 }), { found: false, epoch: 0, path: '' }, 'an unknown disk has none')
  await t.rejects(client.locateBlock({ diskUuid: '../etc', block: 0, epoch: 1 }), { code: 'BAD_ARGUMENT' }, 'a uuid with a path in it is refused')
  // The file holds what a read over gRPC returns (the copy-on-write version 3 included).
  const viaFile = fs.readFileSync(path.join(node.dataDir, `disks/${uuid}/3.3`))
  const viaGrpc = await client.read({ diskUuid: uuid, block: 3, epoch: 9, offset: 0, length: viaFile.length })
  t.ok(viaFile.equals(viaGrpc), 'the named file holds the bytes a read returns')
  t.ok(viaFile.subarray(0, 3000).equals(b) && viaFile.subarray(3000, 5100).equals(a.subarray(2900)), 'version 3 is version 1 with the newer write over it')
  const token = fs.readFileSync(path.join(node.dataDir, LOCAL_READ_TOKEN_FILE), 'utf8')
  t.match(token, /^[0-9a-f]{32}$/, 'the node wrote a 128-bit token into its data dir')
  t.equal(fs.statSync(path.join(node.dataDir, LOCAL_READ_TOKEN_FILE)).mode & 0o777, 0o600, 'the node user\'s only, like the block files (issue 12): agents read locally as that user')
  const meta = await MetaStore.connect(zk.connectString, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  const alive = (await meta.listNodes()).find(n => n.id === 'a1')?.alive
  t.same({ dataDir: alive?.dataDir, token: alive?.localReadToken }, { dataDir: node.dataDir, token }, 'and published it with its absolute data dir')
})

t.test('nodes on the agent\'s host: reads are local and exact', { skip }, async (t) => {
  const { nodes, meta, file } = await setup(t)
  const model = Buffer.alloc(SIZE)
  const rand = rng(11)
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  // Written: blocks 0-9 in pieces (unaligned), 16-17 whole; the rest stays unwritten (zeros).
  for (let i = 0; i < 60; i++) {
    const len = 1 + Math.floor(rand() * 64 * KiB)
    const off = Math.floor(rand() * (10 * BLOCK - len))
    const data = randomBytes(rand, len)
    await fh.write(data, 0, len, off)
    data.copy(model, off)
  }
  const whole = randomBytes(rand, 2 * BLOCK)
  await fh.write(whole, 0, whole.length, 16 * BLOCK)
  whole.copy(model, 16 * BLOCK)
  await fh.sync()

  t.equal(await randomReadsMatch(fh, model, rand, 300), null, '300 random reads match the model')
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'the whole disk reads back as the model')
  const io = await untilValue('a report with local reads', async () => {
    const v = await ioOf(meta, HOST, 'vol')
    return v !== undefined && (v.localReadBytes ?? 0) >= SIZE ? v : undefined
  }, 15_000, 100)
  t.ok((io.localReadBytes ?? 0) >= SIZE, `the agent counted ${io.localReadBytes} bytes read locally`)

  // Every block was looked up by the whole-disk read; with both nodes stopped, reads of cached
  // blocks still finish (over gRPC each would wait 10 s and then fail).
  t.teardown(async () => { for (const n of nodes) await n.kill('SIGCONT').catch(() => {}) })
  for (const n of nodes) await n.kill('SIGSTOP')
  const started = Date.now()
  const stoppedResult = await randomReadsMatch(fh, model, rand, 200)
  const stoppedMs = Date.now() - started
  for (const n of nodes) await n.kill('SIGCONT')
  t.equal(stoppedResult, null, '200 random reads with both nodes stopped match the model')
  // Generous: a read that asked a stopped node would wait the whole 10 s I/O retry (and fail).
  t.ok(stoppedMs < 9000, `and took ${stoppedMs} ms: no node was asked`)
})

t.test('reads of more than 256 KiB of one block (read off the event loop) are local and exact', { skip }, async (t) => {
  const { nodes, meta, file } = await setup(t, { blockSize: '4M' })
  const rand = rng(20)
  const model = Buffer.alloc(SIZE)
  randomBytes(rand, 5 * MiB).copy(model, 1 * MiB + 3)  // the rest stays unwritten
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  await fh.write(model, 0, model.length, 0)
  const big = async (count: number): Promise<string | null> => {
    for (let i = 0; i < count; i++) {
      const len = 300 * KiB + Math.floor(rand() * 2 * MiB)
      const off = Math.floor(rand() * (model.length - len))
      if (!(await pread(fh, off, len)).equals(model.subarray(off, off + len))) return `read of ${len} bytes at ${off} differs from the model`
    }
    return null
  }
  t.equal(await big(60), null, '60 random reads of 300 KiB - 2.3 MiB match the model')
  const local = await settledLocalBytes(meta)
  t.ok(local >= 60 * 300 * KiB, `${local} bytes were read locally`)
  t.teardown(async () => { for (const n of nodes) await n.kill('SIGCONT').catch(() => {}) })
  for (const n of nodes) await n.kill('SIGSTOP')
  const started = Date.now()
  const stopped = await big(40)
  const stoppedMs = Date.now() - started
  for (const n of nodes) await n.kill('SIGCONT')
  t.equal(stopped, null, '40 more with both nodes stopped match the model')
  // Generous: a read that asked a stopped node would wait the whole 10 s I/O retry (and fail).
  t.ok(stoppedMs < 9000, `and took ${stoppedMs} ms: no node was asked`)
})

t.test('copy-on-write after a snapshot: new bytes at the head, old in the snapshot', { skip }, async (t) => {
  const { zk, agent, meta, file } = await setup(t)
  const rand = rng(12)
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const a = randomBytes(rand, BLOCK)
  await fh.write(a, 0, BLOCK, 0)
  t.ok((await pread(fh, 0, BLOCK)).equals(a), 'block 0 reads A (now cached)')
  t.ok((await pread(fh, BLOCK, 4 * KiB)).equals(Buffer.alloc(4 * KiB)), 'block 1 reads zeros (cached as absent)')

  await cliOk(t, ['snapshot', 'create', 'vol@s1'], zk)
  // Read at the new epoch before writing: the version found is the snapshot's (older) one.
  t.ok((await pread(fh, 0, BLOCK)).equals(a), 'after the snapshot block 0 still reads A')
  const b = randomBytes(rand, 100 * KiB)
  await fh.write(b, 0, b.length, 50 * KiB)  // the first write after the snapshot copies the block
  const expected = Buffer.from(a)
  b.copy(expected, 50 * KiB)
  t.ok((await pread(fh, 0, BLOCK)).equals(expected), 'block 0 reads the new bytes over the copied old ones')
  const c1 = randomBytes(rand, 4 * KiB)
  await fh.write(c1, 0, c1.length, BLOCK + 8 * KiB)
  const got1 = await pread(fh, BLOCK, 16 * KiB)
  t.ok(got1.subarray(8 * KiB, 12 * KiB).equals(c1) && got1.subarray(0, 8 * KiB).equals(Buffer.alloc(8 * KiB)), 'block 1 (was absent) reads its first write')
  for (let i = 0; i < 20; i++) {
    if (!(await pread(fh, 0, BLOCK)).equals(expected)) { t.fail(`read ${i} of block 0 is stale`); break }
  }

  const snap = await fs.promises.open(path.join(agent.mountPoint, '.snapshots', 'vol@s1'), 'r')
  t.teardown(() => snap.close().catch(() => {}))
  t.ok((await pread(snap, 0, BLOCK)).equals(a), 'the snapshot still reads A')
  t.ok((await pread(snap, BLOCK, 16 * KiB)).equals(Buffer.alloc(16 * KiB)), 'the snapshot reads block 1 as zeros')
  const io = await untilValue('local reads counted', async () => {
    const v = await ioOf(meta, HOST, 'vol')
    return (v?.localReadBytes ?? 0) > 0 ? v : undefined
  }, 15_000, 100)
  t.ok((io.localReadBytes ?? 0) > 0, 'head reads were local')
})

t.test('a replica marked stale is never read locally, also after its node restarts', { skip }, async (t) => {
  const { nodes, meta, file } = await setup(t)
  const [a1] = nodes
  const rand = rng(13)
  const model = Buffer.alloc(SIZE)
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const first = randomBytes(rand, SIZE / 2)
  await fh.write(first, 0, first.length, 0)
  first.copy(model, 0)
  await fh.sync()
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'read once: every block cached on a1 (the lowest id)')

  await a1.kill('SIGKILL')
  const second = randomBytes(rand, 4 * BLOCK)
  await fh.write(second, 0, second.length, 2 * BLOCK)  // a1 misses it: marked stale for blocks 2-5
  second.copy(model, 2 * BLOCK)
  await fh.sync()
  await a1.restart()
  let stale = -1
  for (let i = 0; i < 20 && stale < 0; i++) if (sha256(await fs.promises.readFile(file)) !== sha256(model)) stale = i
  t.equal(stale, -1, '20 whole-disk reads after a1 came back match the model (none picks its stale blocks)')
  t.equal(await randomReadsMatch(fh, model, rand, 200), null, '200 random reads match the model')
  // After a1's restart (new token) its in-sync blocks are read locally again.
  const before = (await ioOf(meta, HOST, 'vol'))?.localReadBytes ?? 0
  await until('local reads from the restarted node', async () => {
    await fs.promises.readFile(file)
    return ((await ioOf(meta, HOST, 'vol'))?.localReadBytes ?? 0) > before + SIZE
  }, 20_000, 300)
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'and they match the model')
})

t.test('another host writes: this host reads the new bytes', { skip }, async (t) => {
  const { zk, meta, file } = await setup(t)
  const y = await startAgent(t, { zk, host: 'hv-y', site: 'site-a' })
  const rand = rng(14)
  const yfh = await fs.promises.open(path.join(y.mountPoint, 'vol'), 'r+')
  t.teardown(() => yfh.close().catch(() => {}))
  const xfh = await fs.promises.open(file, 'r')  // X only reads: Y holds the lease
  t.teardown(() => xfh.close().catch(() => {}))
  const model = Buffer.alloc(SIZE)
  const write = async (off: number, len: number): Promise<void> => {
    const data = randomBytes(rand, len)
    await yfh.write(data, 0, len, off)
    data.copy(model, off)
  }
  const matches = async (off: number, len: number): Promise<boolean> => (await pread(xfh, off, len)).equals(model.subarray(off, off + len))

  await write(0, BLOCK)
  t.ok(await matches(0, BLOCK), 'X reads what Y wrote to block 0')
  t.ok(await matches(BLOCK, BLOCK), 'X reads block 1 as zeros')
  await write(10 * KiB, 20 * KiB)          // into the same version file
  await write(BLOCK + 5 * KiB, 7 * KiB)    // block 1's first version: a new file
  t.ok(await matches(0, BLOCK), 'X at once reads Y\'s overwrite of block 0')
  t.ok(await matches(BLOCK, BLOCK), 'X at once reads Y\'s first write of block 1')

  await cliOk(t, ['snapshot', 'create', 'vol@s1'], zk)  // Y holds the lease and commits
  await write(100 * KiB, 3 * KiB)          // the first write after the snapshot: a new version file
  await write(BLOCK + 200 * KiB, 1 * KiB)
  // X learns the new epoch through a watch; until then it reads the snapshot's bytes, as a read
  // over gRPC at that epoch would.
  await until('X reads Y\'s write after the snapshot', async () => await matches(0, 2 * BLOCK), 10_000, 50)
  for (let i = 0; i < 20; i++) {
    if (!await matches(0, 2 * BLOCK)) { t.fail(`read ${i} of blocks 0-1 by X is stale`); break }
  }
  await write(200 * KiB, 2 * KiB)
  t.ok(await matches(0, 2 * BLOCK), 'X at once reads a second write at the new epoch')

  // Y discards whole blocks: block 3's only version file is deleted, block 0's head version is
  // replaced by an empty file (the snapshot's version must not show through). X holds both open.
  await write(3 * BLOCK, BLOCK)
  t.ok(await matches(0, 4 * BLOCK), 'X reads blocks 0-3')
  await execFileP('fallocate', ['--punch-hole', '--offset', '0', '--length', String(BLOCK), path.join(y.mountPoint, 'vol')])
  await execFileP('fallocate', ['--punch-hole', '--offset', String(3 * BLOCK), '--length', String(BLOCK), path.join(y.mountPoint, 'vol')])
  model.fill(0, 0, BLOCK)
  model.fill(0, 3 * BLOCK, 4 * BLOCK)
  t.ok(await matches(0, 4 * BLOCK), 'X at once reads the discarded blocks as zeros')
  const io = await untilValue('X\'s local reads counted', async () => {
    const v = await ioOf(meta, HOST, 'vol')
    return (v?.localReadBytes ?? 0) > 0 ? v : undefined
  }, 15_000, 100)
  t.ok((io.localReadBytes ?? 0) > 0, `X read ${io.localReadBytes} bytes locally`)
})

t.test('a clone reads its own blocks locally and the rest through its parent', { skip }, async (t) => {
  const { zk, agent, meta, file } = await setup(t)
  const rand = rng(17)
  const base = randomBytes(rand, SIZE / 2)  // blocks 16-31 stay unwritten
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  await fh.write(base, 0, base.length, 0)
  await cliOk(t, ['snapshot', 'create', 'vol@base'], zk)
  await fh.write(randomBytes(rand, BLOCK), 0, BLOCK, 0)  // the parent's head moves on
  await cliOk(t, ['clone', 'vol@base', 'c1'], zk)
  const model = Buffer.alloc(SIZE)
  base.copy(model)
  const cfile = path.join(agent.mountPoint, 'c1')
  const cfh = await fs.promises.open(cfile, 'r+')
  t.teardown(() => cfh.close().catch(() => {}))
  t.ok((await fs.promises.readFile(cfile)).equals(model), 'the fresh clone reads as the snapshot')
  const mine = randomBytes(rand, 10 * KiB)
  await cfh.write(mine, 0, mine.length, 3 * BLOCK + 7 * KiB)   // copy-on-write of block 3 from the parent
  mine.copy(model, 3 * BLOCK + 7 * KiB)
  const fresh = randomBytes(rand, 5 * KiB)
  await cfh.write(fresh, 0, fresh.length, 20 * BLOCK + 1)       // a block the parent never wrote
  fresh.copy(model, 20 * BLOCK + 1)
  for (let i = 0; i < 5; i++) {
    if (!(await fs.promises.readFile(cfile)).equals(model)) { t.fail(`whole-clone read ${i} differs from the model`); break }
  }
  t.equal(await randomReadsMatch(cfh, model, rand, 100), null, '100 random reads of the clone match the model')
  const c1 = await untilValue('the clone\'s local reads counted', async () => {
    const v = await ioOf(meta, HOST, 'c1')
    return (v?.localReadBytes ?? 0) > 0 ? v : undefined
  }, 15_000, 100)
  t.ok((c1.localReadBytes ?? 0) < c1.readBytes, `the clone read ${c1.localReadBytes} of ${c1.readBytes} bytes locally (the rest from its parent)`)
  t.ok((await pread(fh, 3 * BLOCK, BLOCK)).equals(base.subarray(3 * BLOCK, 4 * BLOCK)), 'the parent\'s block 3 is unchanged')
})

t.test('relocation away from and back to this host\'s nodes while reading', { skip }, async (t) => {
  const { zk, meta, file } = await setup(t)
  await Promise.all(['b1', 'b2'].map(async id => await startNode(t, { zk, id, site: 'site-b', extraArgs: ['--host', 'hv-b'] })))
  const model = randomBytes(rng(18), SIZE)
  const fh = await fs.promises.open(file, 'r+')  // this agent holds the lease: it runs the copies
  t.teardown(() => fh.close().catch(() => {}))
  await fh.write(model, 0, model.length, 0)
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'read once locally: every block cached')
  const localBytes = async (): Promise<number> => (await ioOf(meta, HOST, 'vol'))?.localReadBytes ?? 0

  // Reads race the copies, the flip and the deletion of the data on the dropped (local) nodes.
  const relocateWhileReading = async (to: string): Promise<{ reads: number, bad: string | null }> => {
    let done = false
    const reader = (async () => {
      const rand = rng(19)
      let reads = 0
      while (!done) {
        const bad = await randomReadsMatch(fh, model, rand, 10)
        reads += 10
        if (bad !== null) return { reads, bad }
      }
      return { reads, bad: null }
    })()
    try {
      await cliOk(t, ['relocate', 'vol', '--to', to, '--wait'], zk, 120_000)
    } finally {
      done = true
    }
    return await reader
  }
  const away = await relocateWhileReading('site-b')
  t.equal(away.bad, null, `${away.reads} reads during the relocation to site-b match the model`)
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'after it, the disk reads as the model (from b1, b2)')
  const before = await settledLocalBytes(meta)
  await fs.promises.readFile(file)
  t.equal(await settledLocalBytes(meta), before, 'nothing is read locally once the disk lives on another host\'s nodes')

  const back = await relocateWhileReading('site-a')
  t.equal(back.bad, null, `${back.reads} reads during the relocation back to site-a match the model`)
  t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'after it, the disk reads as the model')
  await until('local reads again', async () => {
    await fs.promises.readFile(file)
    return await localBytes() > before
  }, 15_000, 300)
  t.pass('reads are local again once the disk is back on this host\'s nodes')
})

// Writes the whole disk through the mount (writeFile would truncate, which the mount refuses).
async function writeWhole (file: string, data: Buffer): Promise<void> {
  const fh = await fs.promises.open(file, 'r+')
  try {
    await fh.write(data, 0, data.length, 0)
  } finally {
    await fh.close()
  }
}

// Reads through the mount until the agent's report counted them.
async function readAndReport (meta: MetaStore, file: string, model: Buffer): Promise<Io> {
  const got = await fs.promises.readFile(file)
  if (!got.equals(model)) throw new Error('the disk does not read back as the model')
  return await untilValue('a report of the reads', async () => {
    const v = await ioOf(meta, HOST, 'vol')
    return v !== undefined && v.readBytes >= SIZE ? v : undefined
  }, 15_000, 100)
}

t.test('--no-local-reads reads nothing locally', { skip }, async (t) => {
  const { meta, file } = await setup(t, { agentArgs: ['--no-local-reads'] })
  const model = randomBytes(rng(15), SIZE)
  await writeWhole(file, model)
  const io = await readAndReport(meta, file, model)
  t.equal(io.localReadBytes ?? 0, 0, `${io.readBytes} bytes read, none locally`)
})

t.test('a node whose token file does not match is not read locally', { skip }, async (t) => {
  const tokens: Array<{ file: string, token: string }> = []
  const { meta, file } = await setup(t, {
    beforeAgent: (nodes) => {
      for (const n of nodes) {
        const f = path.join(n.dataDir, LOCAL_READ_TOKEN_FILE)
        tokens.push({ file: f, token: fs.readFileSync(f, 'utf8') })
        fs.writeFileSync(f, 'not-the-published-token')  // as if the agent saw another copy of the dir
      }
    }
  })
  const model = randomBytes(rng(16), SIZE)
  await writeWhole(file, model)
  const io = await readAndReport(meta, file, model)
  t.equal(io.localReadBytes ?? 0, 0, `${io.readBytes} bytes read, none locally`)
  // The right token back: the agent re-checks with the nodes' next liveness update (every 5 s).
  for (const { file: f, token } of tokens) fs.writeFileSync(f, token)
  await until('local reads once the tokens match', async () => {
    const got = await fs.promises.readFile(file)
    if (!got.equals(model)) throw new Error('the disk does not read back as the model')
    return ((await ioOf(meta, HOST, 'vol'))?.localReadBytes ?? 0) > 0
  }, 20_000, 300)
  t.pass('with the published token in place, reads are local')
})

t.test('more blocks than open files: a file closed for the bound is opened again, no node asked', { skip }, async (t) => {
  const { nodes, meta, file } = await setup(t, { agentArgs: ['--local-read-files', '2'] })
  // Held open throughout: the disk stays open on the agent, and with it what it cached.
  const fh = await fs.promises.open(file, 'r')
  t.teardown(() => fh.close().catch(() => {}))
  const model = randomBytes(rng(17), SIZE)
  await writeWhole(file, model)
  const io = await readAndReport(meta, file, model)
  t.ok((io.localReadBytes ?? 0) >= SIZE, `${SIZE / BLOCK} blocks through 2 open files: ${io.localReadBytes} bytes read locally`)
  // Every block's answer is cached though at most 2 files are open: with both nodes stopped,
  // reads all over the disk still finish, from files opened again.
  t.teardown(async () => { for (const n of nodes) await n.kill('SIGCONT').catch(() => {}) })
  for (const n of nodes) await n.kill('SIGSTOP')
  const started = Date.now()
  const result = await randomReadsMatch(fh, model, rng(18), 200)
  const stoppedMs = Date.now() - started
  for (const n of nodes) await n.kill('SIGCONT')
  t.equal(result, null, '200 random reads over all blocks with both nodes stopped match the model')
  // Generous: a read that asked a stopped node would wait the whole 10 s I/O retry (and fail).
  t.ok(stoppedMs < 9000, `and took ${stoppedMs} ms: no node was asked`)
})

t.test('ukai mount --local-read-files must be a whole number of at least 1', { skip }, async (t) => {
  const res = await runCli(['mount', path.join('/nonexistent', 'mnt'), '--site', 'site-a', '--local-read-files', '0'], { zk: '127.0.0.1:1' })
  t.not(res.code, 0, 'refused')
  t.match(res.stderr, /--local-read-files '0'/, `names the option: ${res.stderr.trim()}`)
})
