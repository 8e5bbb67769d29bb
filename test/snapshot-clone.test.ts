// Clones: read through to the parent snapshot, copy-on-write on first write (locally on the
// parent's nodes, pulled to another site), parent untouched; snapshots of a clone; deleting a
// snapshot or disk that clones depend on is refused, --flatten-clones copies what they need.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { randomWrites, rng, sha256 } from './helpers/model'
import { versionFiles } from './helpers/node-files'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 8 * MiB

interface Disk { name: string, uuid: string, parent: null | { disk: string, snapshot: string } }


async function writeAll (file: string, ws: Array<{ off: number, data: Buffer }>): Promise<void> {
  const fh = await fs.promises.open(file, 'r+')
  try {
    for (const w of ws) await fh.write(w.data, 0, w.data.length, w.off)
  } finally {
    await fh.close()
  }
}

t.test('clones', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const b = c.agent('site-b')
  const seed = Date.now() >>> 0
  t.comment(`seed ${seed}`)
  const rand = rng(seed)
  const ok = async (args: string[]): Promise<string> => await cliOk(t, args, zk)
  const hash = async (file: string): Promise<string> => sha256(await fs.promises.readFile(file))
  const disks = async (): Promise<Disk[]> => await cliJson<Disk[]>(['disk', 'list'], zk)

  await ok(['disk', 'create', 'gold', '--size', '8M', '--block-size', '1M', '--site', 'site-a'])
  const mp = Buffer.alloc(SIZE)
  // Leave blocks 6 and 7 unwritten in the parent: the clone must read them as zeros.
  await writeAll(path.join(a.mountPoint, 'gold'), randomWrites(mp.subarray(0, 6 * MiB), rand, 30, 200 * KiB))
  await ok(['snapshot', 'create', 'gold@base'])
  const parentHead = Buffer.from(mp)
  await writeAll(path.join(a.mountPoint, 'gold'), randomWrites(parentHead, rand, 10, 200 * KiB))

  await ok(['clone', 'gold@base', 'vm1'])
  await ok(['clone', 'gold@base', 'vm2', '--site', 'site-b'])
  const list = await disks()
  const rec = (n: string): Disk => list.find(d => d.name === n) as Disk
  t.same(rec('vm1').parent, { disk: 'gold', snapshot: 'base' }, 'clone record names its parent')

  t.test('a fresh clone reads as the snapshot, from any host', async (t) => {
    t.equal(await hash(path.join(a.mountPoint, 'vm1')), sha256(mp))
    t.equal(await hash(path.join(b.mountPoint, 'vm2')), sha256(mp))
    t.same(c.nodes.flatMap(n => versionFiles(n.dataDir, rec('vm1').uuid)), [], 'no data of its own before it writes')
  })

  const m1 = Buffer.from(mp)
  const m2 = Buffer.from(mp)
  t.test('copy-on-write: the clone changes, the parent does not', async (t) => {
    const w1 = randomWrites(m1, rand, 20, 100 * KiB)
    await writeAll(path.join(a.mountPoint, 'vm1'), w1)
    await writeAll(path.join(b.mountPoint, 'vm2'), randomWrites(m2, rand, 20, 100 * KiB))
    t.equal(await hash(path.join(a.mountPoint, 'vm1')), sha256(m1), 'vm1 = its model')
    t.equal(await hash(path.join(b.mountPoint, 'vm2')), sha256(m2), 'vm2 = its model')
    t.equal(await hash(path.join(a.mountPoint, '.snapshots', 'gold@base')), sha256(mp), 'parent snapshot unchanged')
    t.equal(await hash(path.join(a.mountPoint, 'gold')), sha256(parentHead), 'parent head unchanged')
    // Copies land on the clone's own nodes: site-a's for vm1 (the parent's nodes: local copies),
    // site-b's for vm2 (pulled across).
    const blocks = new Set(w1.flatMap(w => { const f = Math.floor(w.off / MiB); const l = Math.floor((w.off + w.data.length - 1) / MiB); return Array.from({ length: l - f + 1 }, (_, i) => f + i) }))
    for (const n of c.nodes.filter(n => n.site === 'site-a')) {
      const files = versionFiles(n.dataDir, rec('vm1').uuid)
      t.equal(files.length, blocks.size, `${n.id}: one version per written block of vm1 (${files.join(' ')})`)
    }
    t.ok(c.nodes.filter(n => n.site === 'site-b').every(n => versionFiles(n.dataDir, rec('vm2').uuid).length > 0), 'vm2 blocks on site-b nodes')
    t.ok(c.nodes.filter(n => n.site === 'site-b').every(n => versionFiles(n.dataDir, rec('vm1').uuid).length === 0), 'no vm1 data on site-b')
  })

  const mSnap = Buffer.alloc(SIZE)
  t.test('a snapshot of a clone reads through for blocks it never wrote', async (t) => {
    m1.copy(mSnap)  // subtests run in order, after this outer body: take the model at run time
    await ok(['snapshot', 'create', 'vm1@cs'])
    await writeAll(path.join(a.mountPoint, 'vm1'), randomWrites(m1, rand, 10, 200 * KiB))
    t.equal(await hash(path.join(a.mountPoint, '.snapshots', 'vm1@cs')), sha256(mSnap), 'vm1@cs = model at its commit')
    t.equal(await hash(path.join(a.mountPoint, 'vm1')), sha256(m1), 'vm1 head = model')
  })

  t.test('deleting what clones depend on is refused; --flatten-clones copies first', async (t) => {
    let r = await runCli(['snapshot', 'delete', 'gold@base'], { zk })
    t.equal(r.code, 1)
    t.match(r.stderr, /has clones vm1, vm2 .*--flatten-clones/)
    r = await runCli(['disk', 'delete', 'gold', '--with-snapshots'], { zk })
    t.equal(r.code, 1)
    t.match(r.stderr, /has clones vm1 .*vm2/)
    t.equal(await hash(path.join(a.mountPoint, '.snapshots', 'gold@base')), sha256(mp), 'refusals changed nothing')
    r = await runCli(['snapshot', 'delete', 'gold@base', '--flatten-clones'], { zk, timeoutMs: 120_000 })
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /flattened vm1, vm2/)
    const after = await disks()
    t.same(after.filter(d => d.name.startsWith('vm')).map(d => d.parent), [null, null], 'clones no longer have a parent')
    // The parent can go entirely now; the clones keep every byte.
    await ok(['disk', 'delete', 'gold'])
    t.equal(await hash(path.join(a.mountPoint, 'vm1')), sha256(m1), 'vm1 intact without its parent')
    t.equal(await hash(path.join(b.mountPoint, 'vm2')), sha256(m2), 'vm2 intact without its parent')
    t.equal(await hash(path.join(a.mountPoint, '.snapshots', 'vm1@cs')), sha256(mSnap), 'vm1@cs intact without its parent')
  })
})
