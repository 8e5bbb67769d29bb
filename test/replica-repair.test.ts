// Issue 9 item 6: a full replica leaves blocks with one copy. It must be visible (disk info, its
// JSON, the agent's log) and repaired onto another node with room: by `ukai disk repair`, and by
// the agent holding the lease on its own after a NO_SPACE stale mark.
// A "small" node is a storage node started with `--capacity 1M` (the block store refuses writes
// past its configured capacity with NO_SPACE, exactly as on a full file system).
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startCluster, startNode } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until } from './helpers/until'

const KiB = 1024
const MiB = 1024 * KiB
const DISK_BYTES = 4 * MiB     // 64 blocks of 64 KiB: a 1 MiB node holds at most 16 of them
const PIECE_BYTES = 128 * KiB  // the kernel's write request size

interface Info {
  blocks: number
  staleBlocks: number
  belowReplicaBlocks: number
  replicasPerNode: Record<string, { inSync: number, syncing: number, stale: number, state: string }>
}

async function fill (file: string): Promise<Buffer> {
  const model = crypto.randomBytes(DISK_BYTES)
  const fd = await fs.promises.open(file, 'r+')
  try {
    for (let off = 0; off < DISK_BYTES; off += PIECE_BYTES) await fd.write(model, off, PIECE_BYTES, off)
    await fd.sync()
  } finally {
    await fd.close()
  }
  return model
}

function sha (b: Buffer): string { return crypto.createHash('sha256').update(b).digest('hex') }

t.test('a full replica: visible, and repaired onto a node with room', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const tiny1 = await startNode(t, { zk, id: 'tiny1', site: 'site-a', capacity: '1M' })
  await startNode(t, { zk, id: 'tiny2', site: 'site-a', capacity: '1M' })
  // Neither agent stands for the controller: its automatic repair (test/controller-repair.test.ts)
  // would race the manual one checked here, and the agent's own NO_SPACE repair.
  const manual = await startAgent(t, { zk, host: 'hv-manual', site: 'site-a', extraArgs: ['--no-auto-repair', '--no-controller'] })
  const auto = await startAgent(t, { zk, host: 'hv-auto', site: 'site-a', extraArgs: ['--no-controller'] })

  t.test('ukai disk repair replaces the full node', async (t) => {
    t.equal((await runCli(['disk', 'create', 'lop', '--size', '4M', '--block-size', '64K', '--nodes', 'a1,tiny1'], { zk })).code, 0)
    const model = await fill(path.join(manual.mountPoint, 'lop'))
    t.pass('every write succeeded although tiny1 filled up (a1 holds every block)')

    const info = await cliJson<Info>(['disk', 'info', 'lop'], zk)
    t.equal(info.replicasPerNode.a1.inSync, 64, 'a1 is in sync for all 64 blocks')
    t.ok(info.replicasPerNode.tiny1.stale > 0, `tiny1 is stale for ${info.replicasPerNode.tiny1.stale} blocks`)
    t.equal(info.belowReplicaBlocks, info.replicasPerNode.tiny1.stale, '--json: the blocks below their replica count are the ones stale on tiny1')
    const text = await runCli(['disk', 'info', 'lop'], { zk })
    t.match(text.stdout, new RegExp(`below replicas +${info.belowReplicaBlocks} blocks? below their replica count of 2: run 'ukai disk repair lop'`), 'disk info says so in a line')
    t.match(text.stdout, /NODE +│ SITE|NODE.*SITE.*NODE STATE.*IN-SYNC.*SYNCING.*STALE/, 'and per node in a table')
    t.match(fs.readFileSync(manual.logFile, 'utf8'), /replica marked stale/, 'the agent logged the stale marking')

    // The node reports its usage every 5 s: repair judges it full once it has.
    await until('tiny1 reports itself full', async () => {
      const nodes = await cliJson<Array<{ id: string, alive: { freeBytes: number } | null }>>(['node', 'list'], zk)
      return (nodes.find(n => n.id === 'tiny1')?.alive?.freeBytes ?? 0) < info.replicasPerNode.tiny1.stale * 64 * KiB
    }, 30_000, 500)
    const repair = await runCli(['disk', 'repair', 'lop'], { zk, timeoutMs: 120_000 })
    t.equal(repair.code, 0, `disk repair exits 0${repair.code !== 0 ? `: ${repair.stderr}` : ''}`)
    t.match(repair.stdout, /node tiny1 is full: its replicas move to a2/, 'same site, the node with room')
    t.match(repair.stdout, /repair of lop: done/)

    const after = await cliJson<Info>(['disk', 'info', 'lop'], zk)
    t.equal(after.belowReplicaBlocks, 0, 'no block below its replica count')
    t.same(Object.keys(after.replicasPerNode).sort(), ['a1', 'a2'], 'tiny1 left the disk')
    t.equal(after.replicasPerNode.a2.inSync, 64, 'a2 is in sync for every block')
    t.equal(sha(await fs.promises.readFile(path.join(manual.mountPoint, 'lop'))), sha(model), 'the data is intact')
    const healthy = await runCli(['disk', 'repair', 'lop'], { zk })
    t.equal(healthy.code, 0, 'a second repair is a no-op')
  })

  t.test('the agent holding the lease repairs by itself after NO_SPACE', async (t) => {
    t.equal((await runCli(['disk', 'create', 'selfheal', '--size', '4M', '--block-size', '64K', '--nodes', 'a1,tiny2'], { zk })).code, 0)
    const file = path.join(auto.mountPoint, 'selfheal')
    // Keep it open: the lease stays with hv-auto, whose runner carries out the repair.
    const holder = await fs.promises.open(file, 'r')
    t.teardown(() => holder.close().catch(() => {}))
    const model = await fill(file)
    await until('the agent repaired selfheal onto a node with room', async () => {
      const info = await cliJson<Info>(['disk', 'info', 'selfheal'], zk)
      return info.belowReplicaBlocks === 0 && info.replicasPerNode.tiny2 === undefined
    }, 90_000, 1000)
    const info = await cliJson<Info>(['disk', 'info', 'selfheal'], zk)
    t.same(Object.keys(info.replicasPerNode).sort(), ['a1', 'a2'], 'tiny2 was replaced by a2 (same site, most room; never a1 twice)')
    t.equal(info.replicasPerNode.a2.inSync, 64)
    t.match(fs.readFileSync(auto.logFile, 'utf8'), /automatic repair started/, 'the agent logged the repair')
    t.equal(sha(await fs.promises.readFile(file)), sha(model), 'the data is intact')
  })

  t.test('ukai disk repair replaces a node that is down', async (t) => {
    t.equal((await runCli(['disk', 'create', 'gone', '--size', '4M', '--block-size', '64K', '--nodes', 'a2,tiny1'], { zk })).code, 0)
    const file = path.join(manual.mountPoint, 'gone')
    const model = Buffer.alloc(DISK_BYTES)
    const fd = await fs.promises.open(file, 'r+')
    try {
      const first = crypto.randomBytes(256 * KiB)
      await fd.write(first, 0, first.length, 0)
      first.copy(model, 0)
      await tiny1.kill('SIGKILL')
      const rest = crypto.randomBytes(DISK_BYTES - first.length)
      await fd.write(rest, 0, rest.length, first.length)
      rest.copy(model, first.length)
      await fd.sync()
    } finally {
      await fd.close()
    }
    const info = await cliJson<Info>(['disk', 'info', 'gone'], zk)
    t.ok(info.belowReplicaBlocks > 0, `${info.belowReplicaBlocks} blocks below their replica count`)
    // Its liveness vanishes with its ZooKeeper session (10 s).
    await until('tiny1 is down', async () => (await cliJson<Info>(['disk', 'info', 'gone'], zk)).replicasPerNode.tiny1.state === 'down', 60_000, 500)
    const repair = await runCli(['disk', 'repair', 'gone'], { zk, timeoutMs: 120_000 })
    t.equal(repair.code, 0, `disk repair exits 0${repair.code !== 0 ? `: ${repair.stdout.slice(-400)}` : ''}`)
    t.match(repair.stdout, /node tiny1 is down: its replicas move to a1/, 'same site, most room, not a2 twice')
    const after = await cliJson<Info>(['disk', 'info', 'gone'], zk)
    t.same(Object.keys(after.replicasPerNode).sort(), ['a1', 'a2'])
    t.equal(after.belowReplicaBlocks, 0)
    t.equal(sha(await fs.promises.readFile(file)), sha(model), 'the data is intact')
  })
})
