// Issue 11 part 3: a storage node killed for good (kill -9) is down, then out after the cluster's
// down-out-ms (set short here), and every disk that had a replica on it gets its replica count
// back on other nodes — same site first, never two replicas on one node — copied from the
// surviving in-sync replica; every byte checked against a model. The controller's
// node-lifecycle duty runs in this process (the controller hosts it in production); the disk
// kept open on an agent is moved by its lease holder, the unleased one by runRelocationHere
// (the controller's orphan duty in production).
import { processZkAuth } from '../src/dev/process-zk-auth'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startCluster, startNode } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until, untilValue } from './helpers/until'
import { MetaStore } from '../src/meta/store'
import { NodeLifecycleDuty } from '../src/controller/node-lifecycle'
import { runRelocationHere } from '../src/relocate/run-here'
import { evacuationTargets } from '../src/meta/placement-policy'
import type { NodeView } from '../src/meta/store'

const KiB = 1024
const MiB = 1024 * KiB
const DISK_BYTES = 4 * MiB
const BLOCKS = 64 // of 64 KiB
const DOWN_OUT_MS = 3000
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { blocks: number, belowReplicaBlocks: number, staleBlocks: number, leaseHolder: string | null, replicasPerNode: Record<string, { inSync: number, site: string }> }
interface NodeRow { id: string, state: string, forMs: number | null, lifecycle: { downSinceMs: number | null, out: { sinceMs: number } | null } | null }

function sha (b: Buffer): string { return crypto.createHash('sha256').update(b).digest('hex') }

async function writeModel (fh: fs.promises.FileHandle, seed: string): Promise<Buffer> {
  const model = Buffer.alloc(DISK_BYTES)
  for (let off = 0; off < DISK_BYTES; off += 128 * KiB) {
    // Every other 128 KiB: half the blocks written, the rest thin (never copied, still counted).
    if ((off / (128 * KiB)) % 2 === 1) continue
    const piece = crypto.createHash('sha512').update(`${seed}:${off}`).digest()
    const data = Buffer.alloc(128 * KiB)
    for (let i = 0; i < data.length; i += piece.length) piece.copy(data, i)
    await fh.write(data, 0, data.length, off)
    data.copy(model, off)
  }
  await fh.sync()
  return model
}

t.test('a node killed for good: down, out after down-out-ms, its disks re-replicated', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  // The victim: a short session, so that its liveness ephemeral goes within 2 s of the kill.
  const victim = await startNode(t, { zk, id: 'a0', site: 'site-a', extraArgs: SESSION })
  // The duty under test runs in this process: the agent stands in no controller election.
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-controller'] })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-30).join('\n')) })

  t.equal((await runCli(['config', 'set', 'down-out-ms', String(DOWN_OUT_MS)], { zk })).code, 0, 'config set down-out-ms')
  t.equal((await runCli(['config', 'get', 'down-out-ms'], { zk })).stdout.trim(), String(DOWN_OUT_MS), 'config get shows it')

  // cold: a0 + b1, closed after writing (nobody holds its lease). hot: a0 + a1, kept open.
  t.equal((await runCli(['disk', 'create', 'cold', '--size', '4M', '--block-size', '64K', '--nodes', 'a0,b1'], { zk })).code, 0)
  t.equal((await runCli(['disk', 'create', 'hot', '--size', '4M', '--block-size', '64K', '--nodes', 'a0,a1'], { zk })).code, 0)
  const coldFh = await fs.promises.open(path.join(agent.mountPoint, 'cold'), 'r+')
  const coldModel = await writeModel(coldFh, 'cold')
  await coldFh.close()
  const hot = await fs.promises.open(path.join(agent.mountPoint, 'hot'), 'r+')
  t.teardown(() => hot.close().catch(() => {}))
  const hotModel = await writeModel(hot, 'hot')

  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  const duty = new NodeLifecycleDuty({ meta, tickMs: 250, retryMs: 1000 })
  await duty.start()
  t.teardown(() => duty.close())

  const killedAtMs = Date.now()
  await victim.kill('SIGKILL')
  // `down` shows as soon as the ephemeral is gone; the duty records since when at its next tick.
  const down = await untilValue('a0 is down, and since when recorded', async () => {
    const row = (await cliJson<NodeRow[]>(['node', 'list'], zk)).find(n => n.id === 'a0')
    return (row?.state === 'down' || row?.state === 'out') && row.lifecycle?.downSinceMs != null ? row : undefined
  }, 30_000, 200)
  t.ok(down.lifecycle?.downSinceMs != null && down.lifecycle.downSinceMs >= killedAtMs, 'since when it is down is kept in ZooKeeper')
  const out = await untilValue('a0 is out', async () => {
    const row = (await cliJson<NodeRow[]>(['node', 'list'], zk)).find(n => n.id === 'a0')
    return row?.state === 'out' ? row : undefined
  }, 30_000, 200)
  const downForMs = (out.lifecycle?.out?.sinceMs ?? 0) - (out.lifecycle?.downSinceMs ?? 0)
  t.ok(downForMs >= DOWN_OUT_MS, `marked out only after down-out-ms (${downForMs} ms down, ${Date.now() - killedAtMs} ms after the kill)`)
  t.match((await runCli(['node', 'list'], { zk })).stdout, /a0 .*│ out +│ \d+ s/, 'node list shows STATE out and for how long')

  // The unleased disk: its relocation is recorded by the duty and run here (the orphan duty's job).
  await until('cold is moved off a0', async () => {
    const rec = await meta.getRelocation('cold')
    if (rec !== null && rec.state === 'done' && !(await meta.loadPlacement(await meta.getDisk('cold'))).some(s => s.runs().some(r => r.replicas.some(x => x.node === 'a0')))) return true
    if (rec !== null && (rec.state === 'copying' || rec.state === 'paused') && await meta.getLease('cold') === null) await runRelocationHere(meta, 'cold')
    return false
  }, 60_000, 250)
  await until('hot is moved off a0 by its lease holder', async () => {
    const info = await cliJson<Info>(['disk', 'info', 'hot'], zk)
    return info.replicasPerNode.a0 === undefined && info.belowReplicaBlocks === 0
  }, 60_000, 500)

  for (const [name, other] of [['cold', 'b1'], ['hot', 'a1']]) {
    const info = await cliJson<Info>(['disk', 'info', name], zk)
    const holders = Object.keys(info.replicasPerNode).sort()
    t.equal(holders.length, 2, `${name}: two replicas again (${holders.join(',')})`)
    t.ok(holders.includes(other), `${name}: the surviving replica on ${other} stays`)
    const added = holders.find(h => h !== other) as string
    t.ok(['a1', 'a2'].includes(added) && added !== other, `${name}: a0's place goes to ${added}, a node of a0's site that did not hold the disk`)
    t.equal(info.replicasPerNode[added].inSync, BLOCKS, `${name}: every block in sync on ${added}`)
    t.equal(info.replicasPerNode[other].inSync, BLOCKS, `${name}: and on ${other}`)
    t.equal(info.belowReplicaBlocks, 0, `${name}: no block below its replica count`)
  }
  const coldBytes = await fs.promises.readFile(path.join(agent.mountPoint, 'cold'))
  t.equal(sha(coldBytes), sha(coldModel), 'cold: every byte as written')
  const hotBytes = Buffer.alloc(DISK_BYTES)
  await hot.read(hotBytes, 0, DISK_BYTES, 0)
  t.equal(sha(hotBytes), sha(hotModel), 'hot: every byte as written')
  // Read from the new replica alone: stop the survivor's node and read cold again (a fresh open).
  await c.node('b1').stop()
  const alone = await fs.promises.readFile(path.join(agent.mountPoint, 'cold'))
  t.equal(sha(alone), sha(coldModel), 'cold: the new replica alone serves every byte')

  // Failover: a new duty (another controller) keeps a0 out and its down time, from ZooKeeper.
  await duty.close()
  const again = new NodeLifecycleDuty({ meta, tickMs: 250 })
  await again.start()
  t.teardown(() => again.close())
  await again.pass()
  const l = await meta.getNodeLifecycle('a0')
  t.equal(l?.out?.sinceMs, out.lifecycle?.out?.sinceMs, 'a standby keeps the recorded out time')

  // The node comes back after it was out: it is up again, its lifecycle record gone, and the
  // disks that moved off it stay where they are.
  await victim.restart()
  await until('a0 is up again', async () => (await cliJson<NodeRow[]>(['node', 'list'], zk)).find(n => n.id === 'a0')?.state === 'up' && await meta.getNodeLifecycle('a0') === null, 30_000, 250)
  for (const name of ['cold', 'hot']) t.notOk('a0' in (await cliJson<Info>(['disk', 'info', name], zk)).replicasPerNode, `${name}: stays off a0`)
})

// The placement rules of an evacuation, without processes: a site-pinned disk only takes nodes
// of its site, and a refusal names what is missing.
t.test('evacuation targets respect the disk\'s placement', async (t) => {
  const node = (id: string, site: string, freeBytes: number, extra: Partial<NodeView> = {}): NodeView => ({
    v: 1, id, site, host: id, address: '', registeredAtMs: 0, lifecycle: null,
    alive: { v: 1, address: '', startedAtMs: 0, capacityBytes: 1e9, usedBytes: 0, freeBytes }, ...extra
  })
  const nodes = [node('a1', 's1', 100 * MiB), node('a2', 's1', 10 * MiB), node('b1', 's2', 900 * MiB)]
  const disk = { name: 'd', placement: {}, blockSizeBytes: 4 * MiB }
  t.same(evacuationTargets(nodes, disk, ['a1', 'b1'], new Set(['a1'])), { targets: ['b1', 'a2'], replaced: [{ node: 'a1', by: 'a2' }] }, 'same site first, although b1 has more room')
  t.throws(() => evacuationTargets(nodes.slice(0, 2).concat(node('b1', 's2', 1 * MiB)), { ...disk, placement: { site: 's1' } }, ['a1', 'a2'], new Set(['a1'])),
    /disk 'd' cannot leave node a1: no other node of site s1 \(the disk's placement\).*a2 holds the disk/, 'a site-pinned disk never leaves its site')
  t.throws(() => evacuationTargets([node('a1', 's1', 0), node('a2', 's1', 1 * MiB)], disk, ['a1'], new Set(['a1'])), /a2 has 1048576 bytes free \(a block is 4194304\)/, 'a full node is named')
})
