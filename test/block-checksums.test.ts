// Checksums of block versions (src/storagenode/page-checksums.ts, version-files.ts): the sidecar
// format, and a BlockStore on a real temp dir whose sidecars stay exact through partial writes,
// punched holes, truncation, copy-on-write clones and a restart; a flipped byte is never served,
// also once the node keeps the sums in memory (sums-cache.ts) and in reads summed in the thread
// pool (pread-sums.ts, above 256 KiB); the one-call check of a span
// (allPagesMatch) agrees with the page-by-page one; page-aligned writes (bytes and sums in one
// native call) keep sidecar and cache exact; and the benchmark switch (no checksums).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { crc32c } from '@node-rs/crc32'
import { BlockStore } from '../src/storagenode/block-store'
import { CHECKSUM_PAGE_BYTES, SIDECAR_HEADER, SIDECAR_HEADER_BYTES, allPagesMatch, checkHeader, firstBadPage, pageSpan, pageSum, pageSums, sidecarFor } from '../src/storagenode/page-checksums'
import { isUkaiError } from '../src/errors'
import { flipByte } from './helpers/node-files'

const UUID = '0b5d3c1e-7a2f-4c11-9e0f-222222222222'
const BLOCK_BYTES = 256 * 1024
const PAGE = CHECKSUM_PAGE_BYTES

function tempDir (t: { teardown: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-crc-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

function rng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 }
}

function bytes (rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256)
  return b
}

const versionFile = (dir: string, block: number, epoch: number): string => path.join(dir, 'disks', UUID, `${block}.${epoch}`)

// The sidecar a version file should have, computed from its bytes, against the one it has
// (entries past either end count as 0: the page reads as zeros).
function sidecarMatches (file: string): boolean {
  const want = sidecarFor(fs.readFileSync(file))
  const got = fs.readFileSync(file + '.crc')
  checkHeader(got, file)
  const n = Math.max(want.length, got.length)
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc(n - b.length)])
  return pad(want).equals(pad(got))
}


t.test('the format: header, a zero page stores 0, sums are crc32c XOR the zero page\'s', async t => {
  t.equal(SIDECAR_HEADER.subarray(0, 4).toString(), 'UKC1')
  t.equal(SIDECAR_HEADER.readUInt32LE(4), PAGE)
  t.equal(SIDECAR_HEADER_BYTES, 8)
  t.equal(pageSum(Buffer.alloc(PAGE)), 0, 'an all-zero page stores 0 (so a sidecar hole means zeros)')
  const page = Buffer.alloc(PAGE, 0xab)
  t.equal(pageSum(page), (crc32c(page) ^ crc32c(Buffer.alloc(PAGE))) >>> 0)
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'crc32c check value')
  const data = Buffer.concat([page, Buffer.alloc(PAGE), Buffer.alloc(100, 1)])
  const sums = pageSums(data)
  t.equal(sums.length, 12, 'one u32 per page, a partial last page included')
  t.equal(sums.readUInt32LE(4), 0)
  t.equal(sums.readUInt32LE(8), pageSum(Buffer.concat([Buffer.alloc(100, 1), Buffer.alloc(PAGE - 100)])), 'a partial page is summed zero-filled')
  t.equal(firstBadPage(data, sums, 7), -1)
  const bad = Buffer.from(data); bad[PAGE + 5] = 1
  t.equal(firstBadPage(bad, sums, 7), 8, 'names the page, counted from the span\'s first page')
  t.same(pageSpan(5000, 100), { start: 4096, end: 8192 })
  t.same(pageSpan(4096, 8192), { start: 4096, end: 12288 })
  t.throws(() => checkHeader(Buffer.from('garbage!'), 'x'), /not a UKAI checksum file/)
})

t.test('sidecars stay exact through random partial writes, holes, truncation and clones, and across a restart', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  const rand = rng(7)
  const model = new Map<string, Buffer>()  // `${block}.${epoch}` → what a read at that epoch sees
  const modelOf = (block: number, epoch: number): Buffer => {
    for (let e = epoch; e >= 1; e--) { const m = model.get(`${block}.${e}`); if (m !== undefined) return m }
    return Buffer.alloc(BLOCK_BYTES)
  }
  for (let epoch = 1; epoch <= 2; epoch++) {
    for (let i = 0; i < 120; i++) {
      const block = Math.floor(rand() * 3)
      const m = Buffer.from(modelOf(block, epoch))
      const off = Math.floor(rand() * (BLOCK_BYTES - 1))
      const len = 1 + Math.floor(rand() * Math.min(3 * PAGE, BLOCK_BYTES - off))
      if (rand() < 0.2) {
        await store.discard(UUID, block, epoch, off, len, 1)  // a hole inside, or a truncated tail
        m.fill(0, off, off + len)
      } else {
        const data = bytes(rand, len)
        await store.write(UUID, block, epoch, off, data, 1)
        data.copy(m, off)
      }
      model.set(`${block}.${epoch}`, m)
    }
  }
  for (const key of model.keys()) t.ok(sidecarMatches(path.join(dir, 'disks', UUID, key)), `sidecar of ${key} matches its bytes`)
  await store.close()
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  for (let block = 0; block < 3; block++) {
    for (let epoch = 1; epoch <= 2; epoch++) t.same(await store.read(UUID, block, epoch, 0, BLOCK_BYTES), modelOf(block, epoch), `block ${block} at epoch ${epoch} after a restart`)
  }
})

t.test('a flipped byte is never served: CHECKSUM for its page, other pages still read', async t => {
  const dir = tempDir(t)
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const data = bytes(rng(3), 4 * PAGE)
  await store.write(UUID, 0, 1, 0, data, 1)
  flipByte(versionFile(dir, 0, 1), 2 * PAGE + 17, 0x5a)
  const err = await store.read(UUID, 0, 1, 2 * PAGE + 100, 10).then(() => null, (e: unknown) => e)
  t.ok(isUkaiError(err, 'CHECKSUM') && /page 2 /.test((err as Error).message), 'the page read is refused, naming the page')
  await t.rejects(store.read(UUID, 0, 1, 0, 4 * PAGE), { code: 'CHECKSUM' }, 'a read spanning it too')
  t.same(await store.read(UUID, 0, 1, PAGE, PAGE), data.subarray(PAGE, 2 * PAGE), 'a good page still reads')
  // A clone made by a write at a newer epoch keeps the sums: the rot stays detectable there.
  await store.write(UUID, 0, 2, 0, Buffer.alloc(10, 1), 1)
  await t.rejects(store.read(UUID, 0, 2, 2 * PAGE, PAGE), { code: 'CHECKSUM' }, 'the copy-on-write clone of a rotten version is refused too')
})

t.test('page-aligned writes (bytes, sums and sidecar in one native call): sidecars and cached sums exact, rot refused', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  const rand = rng(11)
  const model = [Buffer.alloc(BLOCK_BYTES), Buffer.alloc(BLOCK_BYTES)]
  for (let i = 0; i < 150; i++) {
    const block = Math.floor(rand() * 2)
    const pages = 1 + Math.floor(rand() * 4)
    const first = Math.floor(rand() * (BLOCK_BYTES / PAGE - pages + 1))
    const data = rand() < 0.1 ? Buffer.alloc(pages * PAGE) : bytes(rand, pages * PAGE)
    await store.write(UUID, block, 1, first * PAGE, data, 1)
    data.copy(model[block], first * PAGE)
    if (i % 10 === 0) t.same(await store.read(UUID, block, 1, 0, BLOCK_BYTES), model[block], `read ${i}: sums cached from here on, and updated by the writes after`)
  }
  for (const block of [0, 1]) t.ok(sidecarMatches(versionFile(dir, block, 1)), `sidecar of block ${block} matches its bytes`)
  for (const block of [0, 1]) t.same(await store.read(UUID, block, 1, 0, BLOCK_BYTES), model[block], `block ${block} reads as written (cached sums)`)
  await store.close()
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  for (const block of [0, 1]) t.same(await store.read(UUID, block, 1, 0, BLOCK_BYTES), model[block], `block ${block} after a restart (sums from the sidecar)`)
  await store.write(UUID, 0, 1, 3 * PAGE, bytes(rand, PAGE), 1)
  flipByte(versionFile(dir, 0, 1), 3 * PAGE + 9, 0x11)
  await t.rejects(store.read(UUID, 0, 1, 3 * PAGE, PAGE), { code: 'CHECKSUM' }, 'a byte flipped after an aligned write is refused')
})

t.test('reads above SYNC_IO_MAX_BYTES (summed in the thread pool): exact, zeros past the end, rot refused naming its page, the scrub finds it', async t => {
  const dir = tempDir(t)
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const size = 1536 * 1024 + 100  // ends inside page 384
  const data = bytes(rng(21), size)
  await store.write(UUID, 7, 1, 0, data, 1)
  const span = 2 * 1024 * 1024
  t.ok((await store.read(UUID, 7, 1, 0, span)).equals(Buffer.concat([data, Buffer.alloc(span - size)])), '2 MiB read: the bytes, then zeros past the file\'s end')
  t.ok((await store.read(UUID, 7, 1, 1000, 1024 * 1024)).equals(data.subarray(1000, 1000 + 1024 * 1024)), 'an unaligned 1 MiB read')
  flipByte(versionFile(dir, 7, 1), 300 * PAGE + 5, 0x5a)
  const err = await store.read(UUID, 7, 1, 0, span).then(() => null, (e: unknown) => e)
  t.ok(isUkaiError(err, 'CHECKSUM') && /page 300 /.test((err as Error).message), 'a 2 MiB read over the rot is refused, naming the page')
  t.ok((await store.read(UUID, 7, 1, 301 * PAGE, 300 * 1024)).equals(data.subarray(301 * PAGE, 301 * PAGE + 300 * 1024)), 'a large read past it still reads')
  t.match(await store.checkVersion(UUID, 7, 1), { badPage: 300 }, 'the scrub\'s check (1 MiB pieces) finds it')
})

t.test('a 512-byte write inside a page re-sums that page from the file', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  const data = bytes(rng(5), 2 * PAGE)
  await store.write(UUID, 1, 1, 0, data, 1)
  const small = bytes(rng(6), 512)
  await store.write(UUID, 1, 1, PAGE + 1000, small, 1)
  small.copy(data, PAGE + 1000)
  t.same(await store.read(UUID, 1, 1, 0, 2 * PAGE), data)
  t.ok(sidecarMatches(versionFile(dir, 1, 1)))
  await store.close()
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  t.same(await store.read(UUID, 1, 1, PAGE + 900, 700), data.subarray(PAGE + 900, PAGE + 1600), 'after a restart')
})

t.test('a version without a sidecar (older than checksums) is served unverified; orphan sidecars go at start', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  const data = bytes(rng(9), PAGE)
  await store.write(UUID, 2, 1, 0, data, 1)
  await store.close()
  fs.rmSync(versionFile(dir, 2, 1) + '.crc')
  fs.writeFileSync(versionFile(dir, 5, 1) + '.crc', SIDECAR_HEADER)
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  t.notOk(fs.existsSync(versionFile(dir, 5, 1) + '.crc'), 'a sidecar without its version is removed')
  t.same(await store.read(UUID, 2, 1, 0, PAGE), data, 'served')
  t.equal(store.unverifiedVersions, 1, 'and counted as unverified')
})

t.test('the scrub\'s check: adopts a version older than checksums, then finds rot in it', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  const data = bytes(rng(10), 3 * PAGE)
  await store.write(UUID, 4, 1, 0, data, 1)
  const clean = await store.checkVersion(UUID, 4, 1)
  t.match(clean, { sizeBytes: 3 * PAGE, badPage: -1, adopted: false }, 'a clean version')
  await store.close()
  fs.rmSync(versionFile(dir, 4, 1) + '.crc')
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const adopted = await store.checkVersion(UUID, 4, 1)
  t.match(adopted, { badPage: -1, adopted: true }, 'an unverified version is adopted')
  t.equal(adopted?.digest, clean?.digest, 'with the same digest as before')
  t.equal(store.unverifiedVersions, 0)
  t.ok(sidecarMatches(versionFile(dir, 4, 1)), 'its sidecar now matches its bytes')
  flipByte(versionFile(dir, 4, 1), PAGE + 3, 0x5a)
  t.match(await store.checkVersion(UUID, 4, 1), { badPage: 1 }, 'rot found by the scrub\'s check')
  t.equal(await store.checkVersion(UUID, 9, 1), null, 'a version that does not exist: null')
})

t.test('one crc32c call over a span (allPagesMatch) agrees with the page-by-page check, and finds every flipped bit', async t => {
  const rand = rng(21)
  for (const pages of [1, 2, 5, 64, 1024]) {
    const data = bytes(rand, pages * PAGE)
    if (pages > 2) data.fill(0, PAGE, 2 * PAGE)  // a zero page (stored as 0) inside
    const sums = pageSums(data)
    t.ok(allPagesMatch(data, sums), `${pages} pages: a clean span matches`)
    let missed = 0
    for (let k = 0; k < 40; k++) {
      const bad = Buffer.from(data)
      const at = Math.floor(rand() * bad.length)
      bad[at] ^= 1 << (k % 8)
      if (allPagesMatch(bad, sums)) missed++
      if (firstBadPage(bad, sums, 3) !== 3 + Math.floor(at / PAGE)) missed++
    }
    t.equal(missed, 0, `${pages} pages: 40 flipped bits, each found and its page named`)
    const wrongSum = Buffer.from(sums); wrongSum[4 * (pages - 1)] ^= 1
    t.notOk(allPagesMatch(data, wrongSum), `${pages} pages: a wrong stored sum is a mismatch too`)
  }
  t.notOk(allPagesMatch(Buffer.alloc(PAGE + 10, 1), pageSums(Buffer.alloc(PAGE + 10))), 'a partial last page: checked page by page')
})

t.test('the node\'s cached sums stay exact: random writes, holes, truncations and clones, each followed by reads', async t => {
  const dir = tempDir(t)
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const rand = rng(31)
  const model = new Map<string, Buffer>()
  const modelOf = (block: number, epoch: number): Buffer => {
    for (let e = epoch; e >= 1; e--) { const m = model.get(`${block}.${e}`); if (m !== undefined) return m }
    return Buffer.alloc(BLOCK_BYTES)
  }
  let wrong = 0
  for (let epoch = 1; epoch <= 2; epoch++) {
    for (let i = 0; i < 150; i++) {
      const block = Math.floor(rand() * 2)
      const m = Buffer.from(modelOf(block, epoch))
      const off = Math.floor(rand() * (BLOCK_BYTES - 1))
      const len = 1 + Math.floor(rand() * Math.min(3 * PAGE, BLOCK_BYTES - off))
      if (rand() < 0.2) {
        await store.discard(UUID, block, epoch, off, len, 1)
        m.fill(0, off, off + len)
      } else {
        const data = bytes(rand, len)
        await store.write(UUID, block, epoch, off, data, 1)
        data.copy(m, off)
      }
      model.set(`${block}.${epoch}`, m)
      // Reads right after (the sums then come from the cache), near the change and anywhere.
      const near = Math.max(0, off - PAGE)
      const a = await store.read(UUID, block, epoch, near, Math.min(BLOCK_BYTES - near, len + 2 * PAGE))
      if (!a.equals(m.subarray(near, near + a.length))) wrong++
      const any = Math.floor(rand() * BLOCK_BYTES)
      const b = await store.read(UUID, block, epoch, any, Math.min(BLOCK_BYTES - any, 1 + Math.floor(rand() * 2 * PAGE)))
      if (!b.equals(m.subarray(any, any + b.length))) wrong++
    }
  }
  t.equal(wrong, 0, '600 reads interleaved with 300 changes, every byte as written (and no CHECKSUM error)')
  t.equal(store.checksumErrors, 0)
  for (const key of model.keys()) t.ok(sidecarMatches(path.join(dir, 'disks', UUID, key)), `sidecar of ${key} matches its bytes`)
})

t.test('rot after the sums are cached is still never served', async t => {
  const dir = tempDir(t)
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const data = bytes(rng(41), 4 * PAGE)
  await store.write(UUID, 0, 1, 0, data, 1)
  t.same(await store.read(UUID, 0, 1, 0, 4 * PAGE), data, 'read once: its sums are cached now')
  flipByte(versionFile(dir, 0, 1), 3 * PAGE + 1, 0x01)
  await t.rejects(store.read(UUID, 0, 1, 3 * PAGE, 100), { code: 'CHECKSUM' }, 'the rotten page is refused')
  t.same(await store.read(UUID, 0, 1, 0, 3 * PAGE), data.subarray(0, 3 * PAGE), 'the others still read')
})

t.test('the benchmark switch (checksums off): no sidecars, reads unverified, the scrub refuses; a normal start keeps them unverified', async t => {
  const dir = tempDir(t)
  let store = await BlockStore.open({ nodeId: 'n1', dataDir: dir, checksums: false })
  const data = bytes(rng(51), 3 * PAGE)
  await store.write(UUID, 6, 1, 0, data, 1)
  await store.write(UUID, 6, 2, PAGE, Buffer.alloc(10, 7), 1)  // a copy-on-write clone
  t.notOk(fs.existsSync(versionFile(dir, 6, 1) + '.crc'), 'no sidecar written')
  t.notOk(fs.existsSync(versionFile(dir, 6, 2) + '.crc'), 'nor for the clone')
  t.same(await store.read(UUID, 6, 1, 0, 3 * PAGE), data, 'served')
  t.equal(store.unverifiedVersions, 2, 'both versions unverified')
  await t.rejects(store.checkVersion(UUID, 6, 1), /bench-no-checksums/, 'the scrub\'s check says why it cannot check')
  await store.close()
  store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  t.equal(store.unverifiedVersions, 2, 'with checksums on again: unverified, as versions older than checksums')
  t.same(await store.read(UUID, 6, 1, 0, 3 * PAGE), data, 'and served')
  t.match(await store.checkVersion(UUID, 6, 1), { adopted: true, badPage: -1 }, 'until the scrub adopts them')
})
