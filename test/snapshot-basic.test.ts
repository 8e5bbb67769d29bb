// Snapshots through the CLI and the mount: commit with and without an agent holding the lease,
// the read-only .snapshots view byte for byte against models (and qemu-img on it), EROFS,
// rollback (refused while open), delete with space reclaimed on the nodes' data dirs, and bad
// input refused with nothing changed.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { randomWrites, rng, sha256 } from './helpers/model'

const exec = promisify(execFile)
const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 16 * MiB

interface Snap { name: string, epoch: number, sizeBytes: number, clones: string[] }

// Bytes allocated under a data dir (what `du` counts), in bytes.
async function allocatedBytes (dir: string): Promise<number> {
  const { stdout } = await exec('du', ['-s', '-B1', dir])
  return Number(stdout.split(/\s+/)[0])
}

async function readAll (file: string): Promise<Buffer> {
  return await fs.promises.readFile(file)
}


t.test('snapshots', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const file = path.join(a.mountPoint, 'd1')
  const view = (snap: string): string => path.join(a.mountPoint, '.snapshots', `d1@${snap}`)
  const seed = Date.now() >>> 0
  t.comment(`seed ${seed}`)
  const rand = rng(seed)
  const ok = async (args: string[]): Promise<string> => await cliOk(t, args, zk)
  await ok(['disk', 'create', 'd1', '--size', '16M', '--block-size', '1M'])

  // Epoch 1: written and closed, so nobody holds the lease: the CLI commits itself.
  const m1 = Buffer.alloc(SIZE)
  let fh = await fs.promises.open(file, 'r+')
  for (const w of randomWrites(m1, rand, 40, 300 * KiB)) await fh.write(w.data, 0, w.data.length, w.off)
  await fh.close()
  await ok(['snapshot', 'create', 'd1@s1'])

  // Epoch 2: the file stays open and the agent holds the lease: it commits on request.
  const m2 = Buffer.from(m1)
  fh = await fs.promises.open(file, 'r+')
  for (const w of randomWrites(m2, rand, 40, 300 * KiB)) await fh.write(w.data, 0, w.data.length, w.off)
  await ok(['snapshot', 'create', 'd1@s2'])
  const m3 = Buffer.from(m2)
  for (const w of randomWrites(m3, rand, 40, 300 * KiB)) await fh.write(w.data, 0, w.data.length, w.off)

  t.test('the view and the head read byte for byte as their models', async (t) => {
    t.same(fs.readdirSync(path.join(a.mountPoint, '.snapshots')).sort(), ['d1@s1', 'd1@s2'])
    t.ok(fs.readdirSync(a.mountPoint).includes('.snapshots'), '.snapshots in the mount root')
    t.equal(fs.statSync(view('s1')).size, SIZE)
    t.equal(sha256(await readAll(view('s1'))), sha256(m1), 's1 = model at its commit')
    t.equal(sha256(await readAll(view('s2'))), sha256(m2), 's2 = model at its commit')
    t.equal(sha256(await readAll(file)), sha256(m3), 'head = latest model')
  })

  t.test('qemu-img reads a snapshot', async (t) => {
    const ref = path.join(c.zk.dir, 'm2.raw')
    fs.writeFileSync(ref, m2)
    t.teardown(() => fs.rmSync(ref, { force: true }))
    const info = await exec('qemu-img', ['info', '--output=json', '-f', 'raw', view('s2')])
    t.equal(JSON.parse(info.stdout)['virtual-size'], SIZE, 'qemu-img info sees the size')
    await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', view('s2'), ref])
    const out = path.join(c.zk.dir, 'conv.raw')
    t.teardown(() => fs.rmSync(out, { force: true }))
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', view('s1'), out])
    t.equal(sha256(fs.readFileSync(out)), sha256(m1), 'qemu-img convert of s1 = model')
  })

  t.test('the view is read-only: EROFS', async (t) => {
    await t.rejects(fs.promises.open(view('s1'), 'r+'), { code: 'EROFS' }, 'open for write')
    await t.rejects(fs.promises.unlink(view('s1')), { code: 'EROFS' }, 'unlink')
    await t.rejects(fs.promises.truncate(view('s1'), 0), { code: 'EROFS' }, 'truncate')
    await t.rejects(fs.promises.writeFile(path.join(a.mountPoint, '.snapshots', 'new@x'), 'x'), { code: 'EROFS' }, 'create')
    t.equal(sha256(await readAll(view('s1'))), sha256(m1), 'unchanged')
  })

  t.test('list', async (t) => {
    const snaps = await cliJson<Snap[]>(['snapshot', 'list', 'd1'], zk)
    t.same(snaps.map(s => s.name), ['s1', 's2'])
    t.ok(snaps[0].epoch < snaps[1].epoch, 'oldest first')
    t.equal(snaps[0].sizeBytes, SIZE)
    const table = await ok(['snapshot', 'list', 'd1'])
    t.match(table, /NAME.*EPOCH.*CREATED.*SIZE/)
    t.match(table, /s2/)
  })

  t.test('bad input is refused with a clear message and nothing changes', async (t) => {
    const before = await cliJson<Snap[]>(['snapshot', 'list', 'd1'], zk)
    const cases: Array<[string[], number, RegExp]> = [
      [['snapshot', 'create', 'nope@s'], 1, /unknown disk 'nope'/],
      [['snapshot', 'create', 'd1@s1'], 1, /already has a snapshot 's1'/],
      [['snapshot', 'create', 'd1'], 2, /expected DISK@SNAPSHOT/],
      [['snapshot', 'create', 'd1@bad/name'], 2, /bad snapshot name/],
      [['snapshot', 'create', 'd1@'], 2, /bad snapshot name/],
      [['snapshot', 'delete', 'd1@nope'], 1, /no snapshot 'nope'/],
      [['snapshot', 'rollback', 'd1@nope'], 1, /no snapshot 'nope'/],
      [['snapshot', 'list', 'nope'], 1, /unknown disk 'nope'/],
      [['clone', 'd1@nope', 'c9'], 1, /no snapshot 'nope'/],
      [['clone', 'd1@s1', 'd1'], 1, /already exists/],
      [['disk', 'delete', 'd1'], 1, /snapshot/]
    ]
    for (const [args, code, msg] of cases) {
      const r = await runCli(args, { zk })
      t.equal(r.code, code, `ukai ${args.join(' ')} exits ${code}`)
      t.match(r.stderr, msg, `ukai ${args.join(' ')}: ${r.stderr.trim()}`)
    }
    t.same(await cliJson<Snap[]>(['snapshot', 'list', 'd1'], zk), before, 'snapshots unchanged')
    t.equal(sha256(await readAll(view('s1'))), sha256(m1), 's1 unchanged')
  })

  t.test('rollback is refused while open, then returns the head to the snapshot', async (t) => {
    const r = await runCli(['snapshot', 'rollback', 'd1@s2'], { zk })
    t.equal(r.code, 1)
    t.match(r.stderr, /open on hv-a.*before rolling it back/)
    await fh.close()
    t.equal(sha256(await readAll(file)), sha256(m3), 'refused rollback changed nothing')
    await ok(['snapshot', 'create', 'd1@s3'])
    const r2 = await runCli(['snapshot', 'rollback', 'd1@s2'], { zk })
    t.equal(r2.code, 1)
    t.match(r2.stderr, /newer than 's2' \(s3\).*--destroy-newer/)
    await ok(['snapshot', 'rollback', 'd1@s2', '--destroy-newer'])
    t.equal(sha256(await readAll(file)), sha256(m2), 'head = s2')
    t.same((await cliJson<Snap[]>(['snapshot', 'list', 'd1'], zk)).map(s => s.name), ['s1', 's2'], 's3 destroyed')
    t.equal(sha256(await readAll(view('s1'))), sha256(m1), 's1 intact')
    // Writing after the rollback works and leaves the snapshot alone.
    const m4 = Buffer.from(m2)
    fh = await fs.promises.open(file, 'r+')
    for (const w of randomWrites(m4, rand, 10, 300 * KiB)) await fh.write(w.data, 0, w.data.length, w.off)
    await fh.close()
    t.equal(sha256(await readAll(file)), sha256(m4), 'head written after rollback')
    t.equal(sha256(await readAll(view('s2'))), sha256(m2), 's2 intact')
    m3.set(m4)
  })

  t.test('delete reclaims the space on the nodes', async (t) => {
    const dirs = c.nodes.map(n => n.dataDir)
    const before = (await Promise.all(dirs.map(allocatedBytes))).reduce((x, y) => x + y, 0)
    const res = await cliJson<{ freedBytes: number, versionsRemoved: number }>(['snapshot', 'delete', 'd1@s1'], zk)
    const after = (await Promise.all(dirs.map(allocatedBytes))).reduce((x, y) => x + y, 0)
    t.comment(`data dirs: ${before} → ${after} bytes; nodes report ${res.freedBytes} freed in ${res.versionsRemoved} versions`)
    t.ok(res.versionsRemoved > 0, 'versions removed')
    t.ok(before - after >= MiB, `at least 1 MiB reclaimed on disk (${before - after})`)
    t.ok(Math.abs((before - after) - res.freedBytes) <= 64 * KiB, 'reported freed bytes match the data dirs')
    t.same((await cliJson<Snap[]>(['snapshot', 'list', 'd1'], zk)).map(s => s.name), ['s2'])
    t.equal(sha256(await readAll(view('s2'))), sha256(m2), 's2 still reads as its model')
    t.equal(sha256(await readAll(file)), sha256(m3), 'head still reads as its model')
    // Deleting the last snapshot leaves only what the head needs.
    await ok(['snapshot', 'delete', 'd1@s2'])
    t.equal(sha256(await readAll(file)), sha256(m3), 'head intact after deleting every snapshot')
    await ok(['disk', 'delete', 'd1'])
  })
})
