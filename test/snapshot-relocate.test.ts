// Relocating a disk with snapshots moves every version a snapshot needs: after the move to the
// other site every snapshot and the head read as their models, the old site holds nothing, and
// garbage collection works on the new replicas.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { cliJson, cliOk } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { versionFiles } from './helpers/node-files'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 8 * MiB

interface Info { blocksPerSite: Record<string, number>, uuid: string, snapshots: number }

t.test('relocation keeps every snapshot readable', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const b = c.agent('site-b')
  const rand = rng(Date.now() >>> 0)
  const ok = async (args: string[], timeoutMs?: number): Promise<string> => await cliOk(t, args, zk, timeoutMs)
  await ok(['disk', 'create', 'mv', '--size', '8M', '--block-size', '256K', '--site', 'site-a'])
  const model = Buffer.alloc(SIZE)
  const models: Buffer[] = []
  const fh = await fs.promises.open(path.join(a.mountPoint, 'mv'), 'r+')
  try {
    for (let s = 0; s < 3; s++) {
      for (let i = 0; i < 20; i++) {
        const len = 1 + Math.floor(rand() * 300 * KiB)
        const off = Math.floor(rand() * (SIZE - len))
        const data = randomBytes(rand, len)
        data.copy(model, off)
        await fh.write(data, 0, len, off)
      }
      if (s < 2) { await ok(['snapshot', 'create', `mv@s${s}`]); models.push(Buffer.from(model)) }
    }
  } finally {
    await fh.close()
  }
  const before = await cliJson<Info>(['disk', 'info', 'mv'], zk)
  t.equal(before.snapshots, 2, 'disk info counts the snapshots')
  await ok(['relocate', 'mv', '--to', 'site-b', '--wait'], 120_000)
  const after = await cliJson<Info>(['disk', 'info', 'mv'], zk)
  t.same(Object.keys(after.blocksPerSite), ['site-b'], 'all blocks at site-b')
  for (const n of c.nodes.filter(n => n.site === 'site-a')) {
    t.same(versionFiles(n.dataDir, after.uuid), [], `${n.id} dropped its versions`)
  }
  const hash = async (f: string): Promise<string> => sha256(await fs.promises.readFile(f))
  for (const host of [a, b]) {
    t.equal(await hash(path.join(host.mountPoint, '.snapshots', 'mv@s0')), sha256(models[0]), `${host.host}: s0 after relocation`)
    t.equal(await hash(path.join(host.mountPoint, '.snapshots', 'mv@s1')), sha256(models[1]), `${host.host}: s1 after relocation`)
    t.equal(await hash(path.join(host.mountPoint, 'mv')), sha256(model), `${host.host}: head after relocation`)
  }
  const del = await cliJson<{ versionsRemoved: number }>(['snapshot', 'delete', 'mv@s0'], zk)
  t.ok(del.versionsRemoved > 0, 'GC on the new replicas')
  t.equal(await hash(path.join(b.mountPoint, '.snapshots', 'mv@s1')), sha256(models[1]), 's1 after deleting s0')
  t.equal(await hash(path.join(b.mountPoint, 'mv')), sha256(model), 'head after deleting s0')
})
