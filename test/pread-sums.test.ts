// The native read-and-sum call (native/pread-sums, src/storagenode/pread-sums.ts): its page values
// equal the sidecar's as @node-rs/crc32 computes them (page-checksums.ts pageSums), with the
// SSE4.2 and the table-driven crc alike, on random buffers and lengths with partial last pages;
// it names the first mismatching page; a read past the end of the file gives zeros and says how
// many bytes were there; with the sidecar's descriptor it reads the stored values itself and
// names the first page that differs from them, as the JavaScript comparison does (entries past
// the sidecar's end count as 0); bad arguments are a TypeError naming the call; a closed fd an
// EBADF error (rejected, not a crash). The write twin (pwriteSumsSync, writeWithSums): the bytes
// and the sidecar entries land where a model says, a flipped byte afterwards is still found; its
// bad arguments are a TypeError, a failed pwrite of the bytes or of the sums an Error naming which.
// fdatasyncAll: every descriptor synced, each one's errno in its slot (EBADF for a closed one).
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { randomBytes } from 'node:crypto'
import { crc32c } from '@node-rs/crc32'
import { CHECKSUM_PAGE_BYTES, pageSum, pageSums } from '../src/storagenode/page-checksums'
import { errnoError, fdatasyncAll, firstDifferentPage, preadSumsAddon, readWithSums, writeWithSums } from '../src/storagenode/pread-sums'

const PAGE = CHECKSUM_PAGE_BYTES
const addon = preadSumsAddon()

// The reference, independent of the addon (pageSums itself uses it now): @node-rs/crc32 page by
// page, crc32c(page zero-padded) ^ crc32c(zero page).
const ZERO_PAGE_CRC = crc32c(Buffer.alloc(PAGE))
function referenceSums (data: Buffer): Buffer {
  const pages = Math.ceil(data.length / PAGE)
  const out = Buffer.alloc(4 * pages)
  for (let i = 0; i < pages; i++) {
    const page = Buffer.alloc(PAGE)
    data.copy(page, 0, i * PAGE, Math.min(data.length, (i + 1) * PAGE))
    out.writeUInt32LE((crc32c(page) ^ ZERO_PAGE_CRC) >>> 0, 4 * i)
  }
  return out
}

function tempFile (t: { teardown: (fn: () => void) => void }, data: Buffer): { file: string, fd: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-preadsums-'))
  const file = path.join(dir, 'v')
  fs.writeFileSync(file, data)
  const fd = fs.openSync(file, 'r')
  t.teardown(() => { try { fs.closeSync(fd) } catch {} fs.rmSync(dir, { recursive: true, force: true }) })
  return { file, fd }
}

t.test('page values equal @node-rs/crc32 page by page, hardware (three pages at once) and tables, partial last pages included', async t => {
  t.comment(`hardware crc32c: ${addon.hardware}`)
  let mismatches = 0
  const lengths = [1, 7, 8, 9, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE - 5, 256 * PAGE]
  for (let i = 0; i < 40; i++) lengths.push(1 + Math.floor(Math.random() * 64 * PAGE))
  for (const len of lengths) {
    // An odd start offset in its ArrayBuffer: the unaligned head of the crc loop runs too.
    const data = randomBytes(len + 3).subarray(3)
    if (len > PAGE) data.fill(0, 0, PAGE)  // a zero page among them: value 0
    const want = referenceSums(data)
    for (const portable of [false, true]) {
      const got = Buffer.alloc(want.length)
      addon.pageSumsSync(data, got, portable)
      if (!got.equals(want)) { mismatches++; t.fail(`${len} bytes, portable ${portable}`) }
    }
    if (!pageSums(data).equals(want)) { mismatches++; t.fail(`${len} bytes: pageSums (what writes store)`) }
    if (len >= PAGE && pageSum(data.subarray(0, PAGE)) !== want.readUInt32LE(0)) { mismatches++; t.fail(`${len} bytes: pageSum of the first page`) }
  }
  t.equal(mismatches, 0, `${lengths.length} lengths, both implementations and pageSums`)
})

t.test('reads with sums, async and sync; the first mismatching page; zeros past the end', async t => {
  const size = 10 * PAGE + 100  // ends inside page 10
  const content = randomBytes(size)
  const { fd } = tempFile(t, content)
  const len = 12 * PAGE           // reads two pages past the end of the file
  const padded = Buffer.concat([content, Buffer.alloc(len - size)])
  const expected = pageSums(padded)
  t.equal(expected.readUInt32LE(11 * 4), 0, 'a page wholly past the end sums as a zero page')
  for (const sync of [false, true]) {
    const buf = Buffer.alloc(len, 0xee)
    const sums = Buffer.alloc(12 * 4)
    const r = sync ? addon.preadSumsSync(fd, buf, 0, sums, expected) : await addon.preadSums(fd, buf, 0, sums, expected)
    t.same(r, { bytesRead: size, badPage: -1 }, `${sync ? 'sync' : 'async'}: short read at EOF, all pages match`)
    t.ok(buf.equals(padded), 'bytes as in the file, zeros after its end')
    t.ok(sums.equals(expected), 'sums as pageSums computes them')
    const wrong = Buffer.from(expected)
    wrong.writeUInt32LE((wrong.readUInt32LE(7 * 4) ^ 1) >>> 0, 7 * 4)
    wrong.writeUInt32LE((wrong.readUInt32LE(9 * 4) ^ 1) >>> 0, 9 * 4)
    const r2 = sync ? addon.preadSumsSync(fd, buf, 0, sums, wrong) : await addon.preadSums(fd, buf, 0, sums, wrong)
    t.equal(r2.badPage, 7, 'names the first mismatching page')
    t.equal(firstDifferentPage(sums, wrong, 100), 107, 'firstDifferentPage agrees, counted from the first page')
  }
  // At an offset, into a subarray of a bigger buffer (the buffer's own offset is honoured).
  const outer = Buffer.alloc(3 * PAGE + 16, 0xaa)
  const inner = outer.subarray(8, 8 + 3 * PAGE)
  const sums = Buffer.alloc(12)
  const r = await addon.preadSums(fd, inner, 2 * PAGE, sums, null)
  t.same(r, { bytesRead: 3 * PAGE, badPage: -1 })
  t.ok(inner.equals(content.subarray(2 * PAGE, 5 * PAGE)), 'read at the file offset into the subarray')
  t.ok(outer.subarray(0, 8).equals(Buffer.alloc(8, 0xaa)) && outer.subarray(8 + 3 * PAGE).equals(Buffer.alloc(8, 0xaa)), 'nothing outside the subarray written')
  t.ok(sums.equals(expected.subarray(8, 20)))
  // Wholly past the end: all zeros, bytesRead 0.
  const far = await readWithSums(fd, 100 * PAGE, 2 * PAGE)
  t.equal(far.bytesRead, 0)
  t.ok(far.data.equals(Buffer.alloc(2 * PAGE)) && far.sums.equals(Buffer.alloc(8)), 'past the end: zeros, zero sums')
  // readWithSums, large (async, the pool) and small (sync): the same answers.
  for (const n of [PAGE, 80 * PAGE]) {
    const big = randomBytes(n)
    const f = tempFile(t, big)
    const got = await readWithSums(f.fd, 0, n)
    t.ok(got.data.equals(big) && got.sums.equals(pageSums(big)), `readWithSums of ${n} bytes`)
  }
})

t.test('the stored values read in the same call: the first differing page, as firstDifferentPage finds it', async t => {
  const pages = 80
  const data = randomBytes(pages * PAGE)
  const { fd } = tempFile(t, data)
  const stored = pageSums(data)
  // The sidecar as the node keeps it: a header, then one value per page; three pages rotted
  // (their stored values changed), and the sidecar ends 5 pages early (entries read as 0).
  const HEADER = 16
  const sidecar = Buffer.concat([Buffer.alloc(HEADER, 0xee), stored.subarray(0, 4 * (pages - 5))])
  for (const p of [7, 40, 41]) sidecar.writeUInt32LE((sidecar.readUInt32LE(HEADER + 4 * p) ^ 1) >>> 0, HEADER + 4 * p)
  const side = tempFile(t, sidecar)
  const want = (first: number, count: number): Buffer => {
    const b = Buffer.alloc(4 * count)
    if (HEADER + 4 * first < sidecar.length) sidecar.copy(b, 0, HEADER + 4 * first, Math.min(sidecar.length, HEADER + 4 * (first + count)))
    return b
  }
  let checked = 0
  for (const [first, count] of [[0, 1], [0, 7], [0, 8], [8, 32], [39, 1], [41, 2], [42, 33], [70, 10], [76, 4], [0, pages]]) {
    for (const size of [count * PAGE, count * PAGE - 100]) {  // whole pages, and a partial last one
      const r = await readWithSums(fd, first * PAGE, size, { fd: side.fd, position: HEADER + 4 * first })
      const expected = firstDifferentPage(r.sums, want(first, count), 0)
      t.equal(r.badPage, expected, `pages ${first}+${count}, ${size} bytes: badPage ${expected}`)
      t.ok(r.data.equals(data.subarray(first * PAGE, first * PAGE + size)), 'and the bytes')
      checked++
    }
  }
  t.equal(checked, 20)
  // Async (above the sync limit) alike, and a closed sidecar descriptor is an error, not a pass.
  const r = await readWithSums(fd, 0, 64 * PAGE, { fd: side.fd, position: HEADER })
  t.equal(r.badPage, 7, 'a 256 KiB+ read on the pool names page 7')
  const gone = fs.openSync(side.file, 'r')
  fs.closeSync(gone)
  t.throws(() => addon.preadSumsSync(fd, Buffer.alloc(PAGE), 0, Buffer.alloc(4), Buffer.alloc(4), gone, HEADER), { code: 'EBADF' }, 'a closed sidecar fd: EBADF')
})

t.test('linkCountSync: the open file\'s link count, 0 once removed; EBADF on a closed fd', async t => {
  const { file, fd } = tempFile(t, Buffer.alloc(PAGE, 1))
  t.equal(addon.linkCountSync(fd), 1)
  fs.linkSync(file, file + '.2')
  t.equal(addon.linkCountSync(fd), 2, 'a second name counts')
  fs.unlinkSync(file + '.2')
  fs.unlinkSync(file)
  t.equal(addon.linkCountSync(fd), 0, 'removed (the short-circuit read then goes over gRPC)')
  const closed = fs.openSync(__filename, 'r')
  fs.closeSync(closed)
  t.throws(() => addon.linkCountSync(closed), { code: 'EBADF', message: /fstat/ }, 'a closed fd: EBADF naming fstat')
  t.throws(() => (addon.linkCountSync as (...a: unknown[]) => unknown)(-1), { name: 'TypeError', message: /^linkCountSync\(fd\)/ })
})

t.test('bad arguments: a TypeError naming the call; a closed fd: EBADF, rejected', async t => {
  const buf = Buffer.alloc(2 * PAGE)
  const sums = Buffer.alloc(8)
  const bad: Array<[string, unknown[]]> = [
    ['no arguments', []],
    ['negative fd', [-1, buf, 0, sums, null]],
    ['fd a string', ['3', buf, 0, sums, null]],
    ['buf not bytes', [0, 'abc', 0, sums, null]],
    ['buf a Uint32Array', [0, new Uint32Array(4), 0, sums, null]],
    ['negative position', [0, buf, -4096, sums, null]],
    ['fractional position', [0, buf, 1.5, sums, null]],
    ['sums too short', [0, buf, 0, Buffer.alloc(4), null]],
    ['expected too short', [0, buf, 0, sums, Buffer.alloc(4)]],
    ['expected not bytes', [0, buf, 0, sums, 42]],
    ['sumFd without expected', [0, buf, 0, sums, null, 0, 0]],
    ['negative sumFd', [0, buf, 0, sums, Buffer.alloc(8), -1, 0]],
    ['sumFd without sumPosition', [0, buf, 0, sums, Buffer.alloc(8), 0]],
    ['negative sumPosition', [0, buf, 0, sums, Buffer.alloc(8), 0, -16]]
  ]
  const call = (fn: (...a: unknown[]) => unknown, args: unknown[]): unknown => fn(...args)
  for (const [what, args] of bad) {
    t.throws(() => call(addon.preadSums as (...a: unknown[]) => unknown, args), { name: 'TypeError', message: /^preadSums\(fd, buf, position, sums/ }, `preadSums: ${what}`)
    t.throws(() => call(addon.preadSumsSync as (...a: unknown[]) => unknown, args), { name: 'TypeError', message: /^preadSumsSync\(/ }, `preadSumsSync: ${what}`)
  }
  t.throws(() => call(addon.pageSumsSync as (...a: unknown[]) => unknown, [buf, Buffer.alloc(4)]), { name: 'TypeError' }, 'pageSumsSync: sums too short')

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-preadsums-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'v')
  fs.writeFileSync(file, 'x')
  const fd = fs.openSync(file, 'r')
  fs.closeSync(fd)
  await t.rejects(addon.preadSums(fd, buf, 0, sums, null), { code: 'EBADF' }, 'async on a closed fd: rejected with EBADF')
  t.throws(() => addon.preadSumsSync(fd, buf, 0, sums, null), { code: 'EBADF' }, 'sync on a closed fd: throws EBADF')
  const dirFd = fs.openSync(dir, 'r')
  t.teardown(() => fs.closeSync(dirFd))
  await t.rejects(addon.preadSums(dirFd, buf, 0, sums, null), { code: 'EISDIR' }, 'a directory: EISDIR')
  const again = fs.openSync(file, 'r')
  t.teardown(() => fs.closeSync(again))
  t.equal((await readWithSums(again, 0, 1)).bytesRead, 1, 'and the addon still works after errors')
})

t.test('the write twin: bytes and sidecar entries as the model says; a flipped byte afterwards is found', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-pwritesums-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const PAGES = 64
  const SPAN = PAGES + 4  // writes reach up to 4 pages past the file's end: it grows
  const initial = randomBytes(PAGES * PAGE)
  const model = Buffer.concat([initial, Buffer.alloc((SPAN - PAGES) * PAGE)])  // past the end: zeros
  const header = Buffer.from('UKC1\0\x10\0\0', 'latin1')
  const sideModel = Buffer.concat([header, referenceSums(model)])  // zero pages past the end: 0
  fs.writeFileSync(path.join(dir, 'v'), initial)
  fs.writeFileSync(path.join(dir, 'v.crc'), Buffer.concat([header, referenceSums(initial)]))
  const fd = fs.openSync(path.join(dir, 'v'), 'r+')
  const sumFd = fs.openSync(path.join(dir, 'v.crc'), 'r+')
  t.teardown(() => { fs.closeSync(fd); fs.closeSync(sumFd) })
  let wrongSums = 0
  for (let i = 0; i < 200; i++) {
    const pages = 1 + Math.floor(Math.random() * 8)
    const first = Math.floor(Math.random() * (SPAN - pages + 1))
    const data = randomBytes(pages * PAGE + 1).subarray(1)  // an odd address in its ArrayBuffer
    if (i % 7 === 0) data.fill(0, 0, PAGE)  // a zero page: stored 0
    const sums = Buffer.alloc(4 * pages, 0xee)
    writeWithSums(fd, data, first * PAGE, sums, sumFd, 8 + 4 * first)
    if (!sums.equals(referenceSums(data))) wrongSums++
    data.copy(model, first * PAGE)
    referenceSums(data).copy(sideModel, 8 + 4 * first)
  }
  t.equal(wrongSums, 0, '200 writes: the sums given back are the pages\' values')
  const pad = (b: Buffer, n: number): Buffer => b.length >= n ? b : Buffer.concat([b, Buffer.alloc(n - b.length)])
  const bytes = pad(fs.readFileSync(path.join(dir, 'v')), model.length)
  const side = pad(fs.readFileSync(path.join(dir, 'v.crc')), sideModel.length)
  t.ok(bytes.equals(model), 'the version file holds the model\'s bytes (zeros past its end)')
  t.ok(side.equals(sideModel), 'the sidecar holds the model\'s entries, header untouched')
  t.ok(side.subarray(8).equals(referenceSums(bytes)), 'every entry matches its page')
  // Rot after the write: the read with the stored values names its page.
  const rotten = Buffer.from(bytes.subarray(5 * PAGE, 6 * PAGE)); rotten[100] ^= 0x40
  fs.writeSync(fd, rotten, 0, PAGE, 5 * PAGE)
  const r = await readWithSums(fd, 0, 16 * PAGE, { fd: sumFd, position: 8 })
  t.equal(r.badPage, 5, 'a flipped byte after the write is found in its page')
})

t.test('the write twin: bad arguments are a TypeError; a failed pwrite names the bytes or the sums', async t => {
  const page = Buffer.alloc(PAGE, 1)
  const sums = Buffer.alloc(4)
  const bad: Array<[string, unknown[]]> = [
    ['no arguments', []],
    ['a partial page', [0, Buffer.alloc(PAGE + 1), 0, Buffer.alloc(8), 0, 8]],
    ['an unaligned position', [0, page, 512, sums, 0, 8]],
    ['sums too short', [0, Buffer.alloc(2 * PAGE), 0, sums, 0, 8]],
    ['negative sumFd', [0, page, 0, sums, -1, 8]],
    ['no sumPosition', [0, page, 0, sums, 0]],
    ['fractional sumPosition', [0, page, 0, sums, 0, 8.5]]
  ]
  for (const [what, args] of bad) {
    t.throws(() => (addon.pwriteSumsSync as (...a: unknown[]) => unknown)(...args), { name: 'TypeError', message: /^pwriteSumsSync\(fd, buf, position/ }, what)
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-pwritesums-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.writeFileSync(path.join(dir, 'v'), Buffer.alloc(PAGE))
  fs.writeFileSync(path.join(dir, 'v.crc'), Buffer.alloc(12))
  const fd = fs.openSync(path.join(dir, 'v'), 'r+')
  const readOnly = fs.openSync(path.join(dir, 'v.crc'), 'r')
  const closed = fs.openSync(path.join(dir, 'v'), 'r+'); fs.closeSync(closed)
  t.teardown(() => { fs.closeSync(fd); fs.closeSync(readOnly) })
  t.throws(() => writeWithSums(closed, page, 0, sums, readOnly, 8), { code: 'EBADF', op: 'pwrite' }, 'the bytes\' pwrite failed: op pwrite')
  t.ok(fs.readFileSync(path.join(dir, 'v')).equals(Buffer.alloc(PAGE)), 'nothing written')
  t.throws(() => writeWithSums(fd, page, 0, sums, readOnly, 8), { code: 'EBADF', op: 'pwrite-sums' }, 'the sums\' pwrite failed: op pwrite-sums')
  t.ok(fs.readFileSync(path.join(dir, 'v')).equals(page), 'the bytes were written before (what a crash between the two leaves)')
  t.ok(fs.readFileSync(path.join(dir, 'v.crc')).equals(Buffer.alloc(12)), 'the sidecar unchanged')
})

t.test('fdatasyncAll: each descriptor\'s errno in its slot; bad arguments a TypeError', async t => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-fdatasyncall-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const fds = [0, 1, 2, 3].map(i => { const fd = fs.openSync(path.join(dir, `f${i}`), 'w+'); fs.writeSync(fd, Buffer.alloc(PAGE, i)); return fd })
  const closed = fs.openSync(path.join(dir, 'gone'), 'w'); fs.closeSync(closed)
  t.teardown(() => { for (const fd of fds) fs.closeSync(fd) })
  t.same([...await fdatasyncAll(Int32Array.from(fds))], [0, 0, 0, 0], 'four files synced')
  t.same([...await fdatasyncAll(new Int32Array(0))], [], 'nothing to sync')
  const errs = await fdatasyncAll(Int32Array.of(fds[0], closed, fds[1]))
  t.same([...errs], [0, os.constants.errno.EBADF, 0], 'a closed descriptor: EBADF in its slot, the others synced')
  const err = errnoError(errs[1], 'fdatasync', '/x/1.1.crc')
  t.match(err, { code: 'EBADF', syscall: 'fdatasync', path: '/x/1.1.crc', message: /^EBADF: fdatasync '\/x\/1\.1\.crc'/ }, 'as node:fs errors look')
  for (const bad of [undefined, [3], new Uint32Array(1), Int32Array.of(-1)]) {
    t.throws(() => (addon.fdatasyncAll as (...a: unknown[]) => unknown)(bad), { name: 'TypeError', message: /^fdatasyncAll\(fds\)/ }, `bad argument ${String(bad)}`)
  }
})
