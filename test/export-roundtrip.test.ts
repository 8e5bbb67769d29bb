// Export and import against a model, through the real CLI, a real cluster and a second cluster
// (its own ZooKeeper and node): full raw export byte for byte (file and stdout), full and
// incremental streams into another cluster, a restored base in the same cluster, corrupted,
// truncated and wrong-base streams refused with nothing applied, and bad input.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { StreamHeader, decodeStream } from '../src/export/stream-format'
import { MetaStore } from '../src/meta/store'
import { NodePool } from '../src/vdisk/node-pool'
import { loadVersionIndex, writtenAfter } from '../src/export/block-versions'
import { fuseUnavailable, makeTempDir, missingCli, startCluster, startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { runCliBinary, snapshot, writeThroughMount } from './helpers/export'
import { randomBytes, rng, sha256 } from './helpers/model'
import { processZkAuth } from '../src/dev/process-zk-auth'

const KiB = 1024
const MiB = 1024 * KiB
const BS = 64 * KiB
const SIZE = 6 * MiB + 512 // the last block is 512 bytes

const skip = fuseUnavailable() ?? missingCli('export')
if (skip !== null) t.plan(0, skip)

// Blocks with a version newer than the disk's newest snapshot: what an apply would have written.
async function headWrites (zk: string, disk: string): Promise<number> {
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  const pool = new NodePool(meta, { host: 'test', site: '' })
  try {
    await pool.start()
    const rec = await meta.getDisk(disk)
    const snaps = await meta.listSnapshots(disk)
    const newest = snaps.length > 0 ? snaps[snaps.length - 1].epoch : 0
    return writtenAfter(await loadVersionIndex(pool, rec, await meta.loadPlacement(rec)), newest).length
  } finally {
    await pool.close()
    await meta.close()
  }
}

// A stream's header and its records as (block, kind, sha256), via the codec.
async function records (file: string): Promise<{ header: StreamHeader, records: string[] }> {
  const out: string[] = []
  const { header } = await decodeStream(fs.createReadStream(file), { onRecord: r => { out.push(`${r.block} ${r.kind} ${r.kind === 'data' ? sha256(r.data) : r.length}`) } })
  return { header, records: out }
}

async function snapshotsOf (zk: string, disk: string): Promise<string[]> {
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  try {
    return (await meta.listSnapshots(disk)).map(s => s.name)
  } finally {
    await meta.close()
  }
}

async function diskNames (zk: string): Promise<string[]> {
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  try {
    return (await meta.listDiskNames()).sort()
  } finally {
    await meta.close()
  }
}

t.test('export and import round trips', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const agent = c.agent('site-a')
  const dir = makeTempDir(t, 'export')
  const seed = Date.now() >>> 0
  t.comment(`seed ${seed}`)
  const rand = rng(seed)

  t.equal((await runCli(['disk', 'create', 'src', '--size', String(SIZE), '--block-size', '64K'], { zk })).code, 0)
  // s1: a few scattered writes, one across a block boundary, one into the short last block.
  const model = Buffer.alloc(SIZE)
  await writeThroughMount(agent.mountPoint, 'src', model, [
    { offset: 0, data: randomBytes(rand, 100 * KiB) },
    { offset: 2 * MiB + 1000, data: randomBytes(rand, 200 * KiB) },
    { offset: SIZE - 300, data: randomBytes(rand, 300) }
  ])
  await snapshot(zk, 'src@s1')
  const modelS1 = Buffer.from(model)
  // s2: overwrite inside a written block, zero a written block, write new blocks.
  await writeThroughMount(agent.mountPoint, 'src', model, [
    { offset: 10 * KiB, data: randomBytes(rand, 5 * KiB) },
    { offset: 2 * MiB + 64 * KiB, data: Buffer.alloc(BS) },
    { offset: 4 * MiB, data: randomBytes(rand, 3 * BS) }
  ])
  await snapshot(zk, 'src@s2')
  const modelS2 = Buffer.from(model)
  // Written after s2: must not show up in any export of s1 or s2.
  await writeThroughMount(agent.mountPoint, 'src', model, [{ offset: 0, data: randomBytes(rand, 256 * KiB) }])

  const s1raw = path.join(dir, 's1.raw')
  const full = path.join(dir, 's1.stream')
  const inc = path.join(dir, 's1-s2.stream')

  t.test('full raw export equals the snapshot byte for byte, and the file is sparse', async (t) => {
    const res = await runCli(['export', 'src@s1', s1raw, '--json'], { zk })
    t.equal(res.code, 0, res.stderr)
    const got = await fs.promises.readFile(s1raw)
    t.equal(got.length, SIZE, 'exactly the disk size')
    t.equal(sha256(got), sha256(modelS1), 'src@s1 exported equals the model at s1')
    const st = await fs.promises.stat(s1raw)
    t.ok(st.blocks * 512 < 2 * MiB, `sparse: ${st.blocks * 512} bytes allocated for a ${SIZE}-byte image`)
    const summary = JSON.parse(res.stdout)
    t.equal(summary.kind, 'full')
    t.equal(summary.sizeBytes, SIZE)
    const s2 = await runCliBinary(['export', 'src@s2', '-'], { zk })
    t.equal(s2.code, 0, s2.stderr)
    t.equal(s2.stdout.length, SIZE, 'stdout carries the whole image')
    t.equal(sha256(s2.stdout), sha256(modelS2), 'src@s2 to stdout equals the model at s2')
    t.match(s2.stderr, /exported src@s2/, 'the summary goes to stderr when stdout is the data')
  })

  t.test('incremental stream carries only the changed blocks', async (t) => {
    const res = await runCli(['export', '--from', 's1', 'src@s2', inc, '--json'], { zk })
    t.equal(res.code, 0, res.stderr)
    const summary = JSON.parse(res.stdout)
    // Changed blocks: 0 (overwrite), 33 (zeroed), 64..66 (new).
    t.equal(summary.blocks, 5, 'five blocks changed between s1 and s2')
    t.equal(summary.dataBlocks, 4, 'one of them is now zeros (a zero record)')
    const size = (await fs.promises.stat(inc)).size
    t.ok(size <= 5 * BS + 4096, `stream is ${size} bytes for 5 changed 64 KiB blocks`)
    t.equal((await runCli(['export', '--format', 'stream', 'src@s1', full], { zk })).code, 0)
  })

  t.test('full + incremental stream into a second cluster equals the source', async (t) => {
    const zk2 = await startZk(t)
    await startNode(t, { zk: zk2, id: 'x1', site: 'site-x' })
    const z2 = zk2.connectString
    const imp = await runCli(['import', full, 'copy', '--replicas', '1', '--json'], { zk: z2 })
    t.equal(imp.code, 0, imp.stderr)
    t.equal(JSON.parse(imp.stdout).snapshot, 's1')
    t.same(await snapshotsOf(z2, 'copy'), ['s1'], 'the snapshot name travelled with the stream')
    const inc2 = await runCliBinary(['import', '--incremental', '-', 'copy'], { zk: z2, stdin: inc })
    t.equal(inc2.code, 0, inc2.stderr)
    t.same(await snapshotsOf(z2, 'copy'), ['s1', 's2'])
    const got1 = await runCliBinary(['export', 'copy@s1', '-'], { zk: z2 })
    t.equal(sha256(got1.stdout), sha256(modelS1), 'copy@s1 equals src@s1')
    const got2 = await runCliBinary(['export', 'copy@s2', '-'], { zk: z2 })
    t.equal(sha256(got2.stdout), sha256(modelS2), 'copy@s2 equals src@s2')
    // The chain continues from the imported copy: export its increment and compare with the source's.
    const again = path.join(dir, 'copy-s1-s2.stream')
    t.equal((await runCli(['export', '--from', 's1', 'copy@s2', again], { zk: z2 })).code, 0)
    const a = await records(inc)
    const b = await records(again)
    t.same(b.records, a.records, 'the copy\'s increment carries the same blocks and bytes as the source\'s')
    t.same([b.header.from, b.header.to], [a.header.from, a.header.to], 'and names the same base and target (origin kept across clusters)')
  })

  t.test('incremental onto a restored base in the same cluster; raw import from stdin', async (t) => {
    t.equal((await runCli(['import', full, 'restored'], { zk })).code, 0)
    const r = await runCli(['import', '--incremental', inc, 'restored', '--json'], { zk })
    t.equal(r.code, 0, r.stderr)
    const got = await runCliBinary(['export', 'restored@s2', '-'], { zk })
    t.equal(sha256(got.stdout), sha256(modelS2), 'restored@s2 equals src@s2')
    const raw = await runCliBinary(['import', '-', 'fromraw', '--block-size', '128K'], { zk, stdin: s1raw })
    t.equal(raw.code, 0, raw.stderr)
    const back = await fs.promises.readFile(path.join(agent.mountPoint, 'fromraw'))
    t.equal(sha256(back), sha256(modelS1), 'a raw image imported from stdin reads back identical through the mount')
  })

  t.test('a corrupt, truncated or wrong-base stream is refused and nothing is applied', async (t) => {
    t.equal((await runCli(['import', full, 'target'], { zk })).code, 0)
    const before = await diskNames(zk)
    const incBytes = await fs.promises.readFile(inc)
    const flipped = Buffer.from(incBytes)
    flipped[Math.floor(flipped.length / 2)] ^= 0x40
    const flippedFile = path.join(dir, 'flipped.stream')
    await fs.promises.writeFile(flippedFile, flipped)
    const r1 = await runCli(['import', '--incremental', flippedFile, 'target'], { zk })
    t.equal(r1.code, 1)
    t.match(r1.stderr, /checksum mismatch/, r1.stderr)
    const truncated = await runCliBinary(['import', '--incremental', '-', 'target'], { zk, stdin: incBytes.subarray(0, incBytes.length - 40) })
    t.equal(truncated.code, 1)
    t.match(truncated.stderr, /truncated/, truncated.stderr)
    const fullBytes = await fs.promises.readFile(full)
    const cut = await runCliBinary(['import', '-', 'halfmade'], { zk, stdin: fullBytes.subarray(0, Math.floor(fullBytes.length * 0.7)) })
    t.equal(cut.code, 1)
    t.match(cut.stderr, /truncated/)
    t.same(await snapshotsOf(zk, 'target'), ['s1'], 'target has no new snapshot')
    t.equal(await headWrites(zk, 'target'), 0, 'target has no block written since s1')
    t.same(await diskNames(zk), before, 'no disk appeared or vanished')

    // Wrong base: 'other' has a snapshot called s1, but not src's s1.
    t.equal((await runCli(['import', s1raw, 'other'], { zk })).code, 0)
    await snapshot(zk, 'other@s1')
    const r2 = await runCli(['import', '--incremental', inc, 'other'], { zk })
    t.equal(r2.code, 1)
    t.match(r2.stderr, /not this stream's base/, r2.stderr)
    t.same(await snapshotsOf(zk, 'other'), ['s1'])
    // Changed since the base: refused with the way out.
    await writeThroughMount(agent.mountPoint, 'target', Buffer.alloc(SIZE), [{ offset: 5 * MiB, data: Buffer.alloc(100, 1) }])
    const r3 = await runCli(['import', '--incremental', inc, 'target'], { zk })
    t.equal(r3.code, 1)
    t.match(r3.stderr, /changed since snapshot s1.*rollback/, r3.stderr)
    t.same(await snapshotsOf(zk, 'target'), ['s1'])
    const r4 = await runCli(['import', '--incremental', inc, 'nosuch'], { zk })
    t.equal(r4.code, 1)
    t.match(r4.stderr, /unknown disk 'nosuch'/)
    const r5 = await runCli(['import', '--incremental', full, 'restored'], { zk })
    t.equal(r5.code, 2)
    t.match(r5.stderr, /full stream/)
  })

  t.test('a clone exports with its parent\'s blocks read through', async (t) => {
    const res = await runCli(['clone', 'src@s1', 'cl'], { zk })
    t.equal(res.code, 0, res.stderr)
    const clModel = Buffer.from(modelS1)
    await writeThroughMount(agent.mountPoint, 'cl', clModel, [{ offset: 3 * MiB + 5, data: randomBytes(rand, 70 * KiB) }])
    await snapshot(zk, 'cl@c1')
    const got = await runCliBinary(['export', 'cl@c1', '-'], { zk })
    t.equal(got.code, 0, got.stderr)
    t.equal(sha256(got.stdout), sha256(clModel), 'cl@c1 equals src@s1 plus the clone\'s own writes')
    const file = path.join(dir, 'cl.raw')
    t.equal((await runCli(['export', 'cl@c1', file], { zk })).code, 0)
    t.equal(sha256(await fs.promises.readFile(file)), sha256(clModel), 'also as a sparse file')
  })

  t.test('bad input: clear errors, exit status, nothing changed', async (t) => {
    const before = await diskNames(zk)
    const cases: Array<[string[], number, RegExp]> = [
      [['export', 'src', path.join(dir, 'x')], 2, /expected DISK@SNAPSHOT/],
      [['export', 'nosuch@s1', path.join(dir, 'x')], 1, /unknown disk 'nosuch'/],
      [['export', 'src@nosnap', path.join(dir, 'x')], 1, /no snapshot 'nosnap'/],
      [['export', '--from', 's2', 'src@s1', path.join(dir, 'x')], 2, /not older/],
      [['export', '--from', 's1', '--format', 'raw', 'src@s2', path.join(dir, 'x')], 2, /always a ukai stream/],
      [['export', '--format', 'qcow2', 'src@s1', path.join(dir, 'x')], 2, /bad --format/],
      [['export', 'src@s1', dir], 2, /is a directory/],
      [['import', full, 'src'], 1, /already exists/],
      [['import', path.join(dir, 'missing'), 'n1'], 2, /cannot read input/],
      [['import', inc, 'n2'], 2, /incremental stream/],
      [['import', '--incremental', s1raw, 'src'], 2, /needs a ukai stream/],
      [['import', '--incremental', '--site', 'site-a', inc, 'src'], 2, /for a new disk/],
      [['import', full, 'bad name'], 2, /bad disk name/]
    ]
    const odd = path.join(dir, 'odd.raw')
    await fs.promises.writeFile(odd, Buffer.alloc(1000, 1))
    cases.push([['import', odd, 'n3'], 2, /not a multiple of 512/])
    for (const [args, code, pattern] of cases) {
      const r = await runCli(args, { zk })
      t.equal(r.code, code, `ukai ${args.join(' ')} exits ${code}`)
      t.match(r.stderr, pattern, r.stderr.trim())
    }
    t.notOk(fs.existsSync(path.join(dir, 'x')), 'a refused export leaves no output file')
    t.same(await diskNames(zk), before, 'no disk appeared or vanished')
  })
})
