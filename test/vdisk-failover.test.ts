// A storage node killed with SIGKILL in the middle of a write stream: writes go on, the dead
// replica is marked stale in ZooKeeper before they are acknowledged, and every byte reads back.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { StorageClient } from '../src/storagenode/client'
import { startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'

const KiB = 1024
const MiB = 1024 * KiB

interface Info { staleBlocks: number, replicasPerNode: Record<string, { inSync: number, stale: number }>, uuid: string, epoch: number }

t.test('kill -9 of one replica during a write stream', async (t) => {
  // The controller would repair a2's stale blocks by itself; this test checks `disk repair`'s own run.
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agentArgs: ['--no-controller'] })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const res = await runCli(['disk', 'create', 'vol', '--size', '16M', '--block-size', '256K', '--nodes', 'a1,a2'], { zk })
  t.equal(res.code, 0, res.stderr)

  const sizeBytes = 16 * MiB
  const model = Buffer.alloc(sizeBytes)
  const snapModel = Buffer.alloc(sizeBytes)
  const rand = rng(7)
  const fh = await fs.promises.open(path.join(a.mountPoint, 'vol'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  let written = 0
  let failures = 0
  let killedAt = -1
  // Sequential 64 KiB writes over the whole disk; a2 dies a third of the way through.
  for (let off = 0; off < sizeBytes; off += 64 * KiB) {
    if (killedAt < 0 && off >= sizeBytes / 3) {
      killedAt = off
      await fh.sync() // what was written so far is durable on both replicas
      // A snapshot first, so that the blocks written from here on have two versions to repair.
      t.equal((await runCli(['snapshot', 'create', 'vol@before'], { zk })).code, 0)
      model.copy(snapModel)
      await c.node('a2').kill('SIGKILL')
    }
    const data = randomBytes(rand, 64 * KiB)
    try {
      await fh.write(data, 0, data.length, off)
      data.copy(model, off)
      written++
    } catch (err) {
      failures++
      t.comment(`write at ${off} failed: ${String(err)}`)
    }
  }
  t.equal(failures, 0, 'every write succeeded with one replica left')
  await fh.sync()
  t.pass(`fsync after the failure succeeded (${written} writes)`)

  const info = await cliJson<Info>(['disk', 'info', 'vol'], zk)
  const blocksAfterKill = sizeBytes / (256 * KiB) - Math.floor(killedAt / (256 * KiB))
  t.equal(info.replicasPerNode.a2.stale, blocksAfterKill, 'a2 is stale for exactly the blocks written after it died')
  t.equal(info.replicasPerNode.a1.stale, 0, 'a1 never went stale')
  t.equal(info.staleBlocks, blocksAfterKill)

  const whole = await fs.promises.readFile(path.join(a.mountPoint, 'vol'))
  t.equal(sha256(whole), sha256(model), 'every byte reads back right from the surviving replica')

  // With a2 back, reads must still never pick its stale copies.
  await c.node('a2').restart()
  const again = await fs.promises.readFile(path.join(a.mountPoint, 'vol'))
  t.equal(sha256(again), sha256(model), 'after a2 restarts, reads still avoid its stale blocks')

  // `ukai disk repair` copies a2's stale blocks again from a1, every version of them.
  const repaired = await runCli(['disk', 'repair', 'vol'], { zk, timeoutMs: 120_000 })
  t.equal(repaired.code, 0, `the repair exits 0${repaired.code === 0 ? '' : `: ${repaired.stdout.slice(-400)}`}`)
  t.match(repaired.stdout, /repair of vol: done/)
  const after = await cliJson<Info>(['disk', 'info', 'vol'], zk)
  t.equal(after.staleBlocks, 0, 'no stale replica left')
  t.same(after.replicasPerNode.a2, { ...after.replicasPerNode.a2, inSync: 64, stale: 0 }, 'a2 is in sync for every block')
  const [snap] = await cliJson<Array<{ epoch: number }>>(['snapshot', 'list', 'vol'], zk)
  const a2 = new StorageClient({ nodeId: 'a2', address: c.node('a2').address })
  try {
    const read = async (epoch: number): Promise<Buffer> => Buffer.concat(await Promise.all(Array.from({ length: 64 }, async (_, b) =>
      await a2.read({ diskUuid: after.uuid, block: b, epoch, offset: 0, length: 256 * KiB }))))
    t.equal(sha256(await read(after.epoch)), sha256(model), 'a2 alone now holds the head, byte for byte')
    t.equal(sha256(await read(snap.epoch)), sha256(snapModel), 'and the snapshot\'s versions')
  } finally {
    await a2.close()
  }
  const again2 = await runCli(['disk', 'repair', 'vol'], { zk })
  t.equal(again2.code, 0, 'a repair with nothing to do is a success')
  t.match(again2.stdout, /no stale replica; nothing to repair/, 'a second repair says there is nothing to do')
})

t.test('a write fails with EIO, and marks nothing stale, when every replica is gone', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--io-retry-ms', '4000'] })
  t.equal((await runCli(['disk', 'create', 'solo', '--size', '1M', '--replicas', '1'], { zk })).code, 0)
  const file = path.join(a.mountPoint, 'solo')
  fs.writeFileSync(file, Buffer.alloc(4096, 9), { flag: 'r+' })
  await c.node('a1').kill('SIGKILL')
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  await t.rejects(fh.write(Buffer.alloc(4096, 1), 0, 4096, 0), { code: 'EIO' })
  const info = await cliJson<Info>(['disk', 'info', 'solo'], zk)
  t.equal(info.staleBlocks, 0, 'the last replica is never marked stale')
  await c.node('a1').restart()
  const back = Buffer.alloc(4096)
  await fh.read(back, 0, 4096, 0)
  t.ok(back.every(x => x === 9), 'the acknowledged data is still there, read once the node is back')
})
