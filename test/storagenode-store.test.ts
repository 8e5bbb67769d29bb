// BlockStore on a real temp dir: byte-exact model checks, versions, sparseness, fencing,
// capacity, discard, deletes, argument validation.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BlockStore, FAULT_FSYNC_EIO_FILE_ENV } from '../src/storagenode/block-store'

const UUID = '0b5d3c1e-7a2f-4c11-9e0f-111111111111'
const BLOCK_BYTES = 1024 * 1024

function tempDir (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-store-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

// Deterministic PRNG so a failure reproduces.
function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

function randomBytes (rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256)
  return b
}

t.test('random unaligned writes and reads match an in-memory model', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  const rand = rng(42)
  const blocks = 4
  const model = Array.from({ length: blocks }, () => Buffer.alloc(BLOCK_BYTES))
  for (let i = 0; i < 300; i++) {
    const b = Math.floor(rand() * blocks)
    const off = Math.floor(rand() * (BLOCK_BYTES - 1))
    const len = 1 + Math.floor(rand() * Math.min(70_000, BLOCK_BYTES - off))
    const data = randomBytes(rand, len)
    data.copy(model[b], off)
    await store.write(UUID, b, 1, off, data, 1)
  }
  for (let i = 0; i < 300; i++) {
    const b = Math.floor(rand() * (blocks + 1))  // block `blocks` was never written
    const off = Math.floor(rand() * BLOCK_BYTES)
    const len = Math.floor(rand() * 100_000)
    const got = await store.read(UUID, b, 1, off, len)
    t.equal(got.length, len)
    const want = Buffer.alloc(len)
    if (b < blocks) model[b].copy(want, 0, off, Math.min(off + len, BLOCK_BYTES))
    if (!got.equals(want)) { t.fail(`block ${b} ${off}+${len} differs`); return }
  }
  t.pass('all reads matched')
})

t.test('versions: copy-on-write keeps the older epoch intact', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  await store.write(UUID, 0, 1, 100, Buffer.from('epoch-one'), 1)
  await store.write(UUID, 0, 2, 100, Buffer.from('EPOCH-TWO'), 1)
  t.equal((await store.read(UUID, 0, 1, 100, 9)).toString(), 'epoch-one')
  t.equal((await store.read(UUID, 0, 2, 100, 9)).toString(), 'EPOCH-TWO')
  t.equal((await store.read(UUID, 0, 5, 100, 9)).toString(), 'EPOCH-TWO', 'newer epoch reads newest older version')
  t.same((await store.read(UUID, 0, 0, 100, 9)), Buffer.alloc(9), 'epoch before any version reads zeros')
  // a write to epoch 3 of an untouched region still sees the cloned bytes
  await store.write(UUID, 0, 3, 0, Buffer.from('x'), 1)
  t.equal((await store.read(UUID, 0, 3, 100, 9)).toString(), 'EPOCH-TWO')
  t.same(store.listBlocks(UUID), [{ block: 0, epochs: [1, 2, 3] }])
})

t.test('sparse: a small write at a high offset allocates little', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  await store.write(UUID, 7, 1, 60 * 1024 * 1024, Buffer.alloc(4096, 1), 1)
  const [v] = await store.blockInfo(UUID, 7)
  t.equal(v.sizeBytes, 60 * 1024 * 1024 + 4096)
  t.ok(v.allocatedBytes <= 64 * 1024, `allocated ${v.allocatedBytes} bytes`)
  // and the clone of it stays thin
  await store.write(UUID, 7, 2, 0, Buffer.alloc(10, 2), 1)
  const info = await store.blockInfo(UUID, 7)
  t.ok(info[1].allocatedBytes <= 64 * 1024, `clone allocated ${info[1].allocatedBytes} bytes`)
  t.same(await store.read(UUID, 7, 2, 60 * 1024 * 1024, 4096), Buffer.alloc(4096, 1))
})

t.test('fencing: older lease epochs refused, raise persists across reopen', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  await store.write(UUID, 0, 1, 0, Buffer.from('a'), 3)
  await t.rejects(store.write(UUID, 0, 1, 0, Buffer.from('b'), 2), { code: 'FENCED' })
  await t.rejects(store.flush(UUID, 2), { code: 'FENCED' })
  t.equal(await store.fence(UUID, 5), 5)
  t.equal(await store.fence(UUID, 4), 5, 'fence never lowers')
  await t.rejects(store.write(UUID, 0, 1, 0, Buffer.from('b'), 4), { code: 'FENCED' })
  await store.close()
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  await t.rejects(store.write(UUID, 0, 1, 0, Buffer.from('b'), 4), { code: 'FENCED' }, 'fence survives restart')
  await store.write(UUID, 0, 1, 0, Buffer.from('c'), 5)
  t.equal((await store.read(UUID, 0, 1, 0, 1)).toString(), 'c')
})

t.test('capacity quota: NO_SPACE, nothing half-written, delete frees', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t), capacityBytes: 256 * 1024 })
  t.teardown(() => store.close())
  const chunk = Buffer.alloc(64 * 1024, 7)
  let written = 0
  let err: any
  for (let i = 0; i < 10; i++) {
    try { await store.write(UUID, i, 1, 0, chunk, 1); written++ } catch (e) { err = e; break }
  }
  t.equal(err?.code, 'NO_SPACE')
  t.match(err?.message, /n1.*262144/)
  t.ok(written >= 3 && written <= 4, `wrote ${written} chunks`)
  t.same(await store.read(UUID, written, 1, 0, 16), Buffer.alloc(16), 'refused write left nothing')
  t.same(await store.read(UUID, 0, 1, 0, chunk.length), chunk)
  const st = await store.stat()
  t.ok(st.usedBytes <= 256 * 1024 && st.freeBytes < 64 * 1024 + 4096)
  t.ok(await store.deleteDisk(UUID) >= written * chunk.length)
  t.equal(store.usedBytes, 0)
  t.equal((await store.stat()).freeBytes, 256 * 1024)
  t.same(store.listBlocks(UUID), [])
})

t.test('discard: tail truncates, middle zeroes, whole unlinks; older epoch unaffected', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  await store.write(UUID, 0, 1, 0, Buffer.alloc(3 * 65536, 9), 1)
  await store.discard(UUID, 0, 1, 65536, 100, 1)
  t.same(await store.read(UUID, 0, 1, 65530, 110), Buffer.concat([Buffer.alloc(6, 9), Buffer.alloc(100), Buffer.alloc(4, 9)]))
  await store.discard(UUID, 0, 1, 2 * 65536, 65536, 1)
  t.equal((await store.blockInfo(UUID, 0))[0].sizeBytes, 2 * 65536, 'tail truncated')
  await store.discard(UUID, 0, 2, 0, 4 * 65536, 1)
  t.same(await store.read(UUID, 0, 2, 0, 16), Buffer.alloc(16), 'epoch 2 reads zeros')
  t.same(await store.read(UUID, 0, 1, 0, 16), Buffer.alloc(16, 9), 'epoch 1 untouched')
  await store.discard(UUID, 0, 1, 0, 4 * 65536, 1)  // nothing older: the version file goes
  t.same(store.listBlocks(UUID), [{ block: 0, epochs: [2] }])
})

t.test('flush and deleteBlocks', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  await store.write(UUID, 1, 1, 0, Buffer.alloc(8192, 1), 1)
  await store.write(UUID, 2, 1, 0, Buffer.alloc(8192, 1), 1)
  await store.flush(UUID, 1)
  await store.flush(UUID, 1)  // nothing dirty: a no-op
  t.ok(await store.deleteBlocks(UUID, [1]) >= 8192)
  t.same(store.listBlocks(UUID), [{ block: 2, epochs: [1] }])
})

t.test('bad arguments and data dir', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  await t.rejects(store.read(UUID, 0, 1, 0, 4 * 1024 * 1024 + 1), { code: 'BAD_ARGUMENT' })
  await t.rejects(store.read('../etc', 0, 1, 0, 1), { code: 'BAD_ARGUMENT' })
  await t.rejects(store.write('a/b', 0, 1, 0, Buffer.alloc(1), 1), { code: 'BAD_ARGUMENT' })
  await t.rejects(store.write(UUID, -1, 1, 0, Buffer.alloc(1), 1), { code: 'BAD_ARGUMENT' })
  await t.rejects(store.write(UUID, 0, 1, 64 * 1024 * 1024, Buffer.alloc(1), 1), { code: 'BAD_ARGUMENT' })
  await t.rejects(BlockStore.open({ nodeId: 'n1', dataDir: '/nonexistent/ukai' }), { code: 'DATA_DIR', message: /\/nonexistent\/ukai/ })
})

t.test('concurrent overlapping writes apply in call order', async t => {
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: tempDir(t) })
  t.teardown(() => store.close())
  const ops = []
  for (let i = 0; i < 50; i++) ops.push(store.write(UUID, 0, 4, (i % 5) * 10, Buffer.alloc(100, i), 1))
  await Promise.all(ops)
  const got = await store.read(UUID, 0, 4, 0, 140)
  const want = Buffer.alloc(140)
  for (let i = 0; i < 50; i++) want.fill(i, (i % 5) * 10, (i % 5) * 10 + 100)
  t.same(got, want)
})

// Issue 9, "fsync must never lie": the fault switch is read when a store is made, so these
// stores are opened with it set (FAULT_FSYNC_EIO_FILE_ENV: fsync fails while the file exists).
async function faultyStore (t: { teardown: (fn: () => unknown) => void }, dataDir: string, failFile: string): Promise<BlockStore> {
  process.env[FAULT_FSYNC_EIO_FILE_ENV] = failFile
  try {
    const store = await BlockStore.open({ nodeId: 'n1', dataDir })
    t.teardown(async () => { fs.rmSync(failFile, { force: true }); await store.close() })
    return store
  } finally {
    delete process.env[FAULT_FSYNC_EIO_FILE_ENV]
  }
}

t.test('a flush that overlaps a failing one fails too (it would have called its files durable)', async t => {
  const failFile = path.join(tempDir(t), 'fail-fsync')
  const store = await faultyStore(t, tempDir(t), failFile)
  await store.write(UUID, 0, 1, 0, Buffer.alloc(4096, 1), 1)
  fs.writeFileSync(failFile, '')
  const first = store.flush(UUID, 1)   // takes the file off the dirty set, its fsync fails
  const second = store.flush(UUID, 1)  // finds nothing dirty: must still not answer "durable"
  await t.rejects(first, { code: 'IO_ERROR' })
  await t.rejects(second, { code: 'IO_ERROR' }, 'the overlapping flush fails with the one that had the file')
  fs.rmSync(failFile)
  await store.flush(UUID, 1)
  t.pass('the file stayed dirty: the next flush syncs it')
})

t.test('syncBlock fsyncs every version file of the block and the directory; a failing disk refuses the start', async t => {
  const dir = tempDir(t)
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.equal((await store.stat()).fsyncCount, 1, 'the start-up sync of the data dir counts as one')
  t.type(store.startSyncMs, 'number')
  await store.write(UUID, 3, 1, 0, Buffer.alloc(4096, 1), 1)
  await store.write(UUID, 3, 2, 0, Buffer.alloc(4096, 2), 1)
  const before = (await store.stat()).fsyncCount
  await store.syncBlock(UUID, 3)
  t.equal((await store.stat()).fsyncCount - before, 5, 'two version files, their checksum files and the directory')
  await store.close()
  const failFile = path.join(os.tmpdir(), `ukai-fail-fsync-${process.pid}`)
  fs.writeFileSync(failFile, '')
  t.teardown(() => fs.rmSync(failFile, { force: true }))
  process.env[FAULT_FSYNC_EIO_FILE_ENV] = failFile
  try {
    await t.rejects(BlockStore.open({ nodeId: 'n1', dataDir: dir }), { code: 'DATA_DIR' }, 'a data dir that cannot be made durable is not served')
  } finally {
    delete process.env[FAULT_FSYNC_EIO_FILE_ENV]
  }
})

t.test('a staged version (a peer base copy) appears whole at commit or not at all', async t => {
  const dataDir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir })
  const dir = path.join(dataDir, 'disks', UUID)
  const names = (): string[] => fs.readdirSync(dir).filter(n => n !== 'fence').sort()
  const data = randomBytes(rng(3), BLOCK_BYTES)

  // Written, not committed: nothing to read yet, only a temporary on disk.
  let staged = await store.stageVersion(UUID, 0, 1, 1)
  await staged.write(0, data.subarray(0, BLOCK_BYTES / 2))
  t.notOk(store.hasVersions(UUID, 0), 'no version before commit')
  t.equal(names().filter(n => n.endsWith('.tmp')).length, 1, 'a temporary file')
  // A crash here (the store is simply reopened): the temporary goes, no version appears.
  store = await BlockStore.open({ nodeId: 'n1', dataDir })
  t.teardown(() => store.close())
  t.same(names(), [], 'the temporary of an interrupted copy is removed at start')
  t.notOk(store.hasVersions(UUID, 0), 'and no version of the block exists')

  // Aborted: nothing left.
  staged = await store.stageVersion(UUID, 0, 1, 1)
  await staged.write(0, data.subarray(0, 4096))
  await staged.abort()
  await staged.abort()
  t.same(names(), [], 'abort removes the temporary (idempotent)')

  // Committed: the whole version, under its name.
  staged = await store.stageVersion(UUID, 0, 1, 1)
  await staged.write(0, data.subarray(0, BLOCK_BYTES / 2))
  await staged.write(BLOCK_BYTES / 2, data.subarray(BLOCK_BYTES / 2))
  t.equal(await staged.commit(), 'copied')
  await staged.abort()  // a no-op after commit
  t.same(names(), ['0.1', '0.1.crc'], 'renamed into place with its checksums, no temporary left')
  t.same(await store.read(UUID, 0, 1, 0, BLOCK_BYTES), data, 'reads back byte for byte')

  // A version created meanwhile (a racing write of the clone) is never overwritten.
  staged = await store.stageVersion(UUID, 1, 1, 1)
  await staged.write(0, data.subarray(0, 4096))
  await store.write(UUID, 1, 1, 0, Buffer.alloc(4096, 7), 1)
  t.equal(await staged.commit(), 'present', 'commit finds the block written and installs nothing')
  t.same(await store.read(UUID, 1, 1, 0, 4096), Buffer.alloc(4096, 7), 'the racing write stays')
  t.same(names(), ['0.1', '0.1.crc', '1.1', '1.1.crc'], 'no temporary left')

  // Fenced meanwhile: refused at commit, nothing installed.
  staged = await store.stageVersion(UUID, 2, 1, 1)
  await staged.write(0, data.subarray(0, 4096))
  await store.fence(UUID, 2)
  await t.rejects(staged.commit(), { code: 'FENCED' }, 'a copy by a fenced writer is not installed')
  t.notOk(store.hasVersions(UUID, 2), 'no version of the fenced copy')
  await t.rejects(store.stageVersion(UUID, 3, 1, 1), { code: 'FENCED' }, 'and a fenced writer cannot start one')
  t.same(names(), ['0.1', '0.1.crc', '1.1', '1.1.crc'], 'no temporary left')
})
