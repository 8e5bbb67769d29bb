// Issue 11: "flip bytes in a block file (never served, detected, repaired; scrub finds one nobody
// read)" — with no operator. A byte flipped on one replica of a block nobody reads is found by
// its node's background scrub; the controller's scrub-findings duty (src/controller/
// scrub-findings.ts) asks the nodes for their findings, scrubs the disk, which marks the replica
// stale, and the repair duty copies the block again: the block file holds the right bytes, every
// replica is in sync, and the whole disk reads back byte for byte.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { NodeFixture, fuseUnavailable, missingCli, startAgent, startController, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk } from './helpers/cli'
import { flipByte, versionFiles } from './helpers/node-files'
import { randomBytes, rng } from './helpers/model'
import { replicaStates } from './helpers/replica-faults'
import { until } from './helpers/until'

const KiB = 1024
const BLOCK = 256 * KiB
const SIZE = 4 * 1024 * KiB
const skip = fuseUnavailable() ?? missingCli('mount') ?? undefined

interface Info { uuid: string, scrub: { markedStaleTotal: number, mismatchesTotal: number } | null }
interface ControllerState { leader: { host: string, duties: Array<{ name: string, detail?: { markedStale?: number } }> } | null }

function blockFile (node: NodeFixture, uuid: string, block: number): string {
  const found = versionFiles(node.dataDir, uuid).filter(f => f.startsWith(`${block}.`))
  if (found.length !== 1) throw new Error(`${node.id}: block ${block} has ${found.length} version files`)
  return path.join(node.dataDir, 'disks', uuid, found[0])
}

t.test('rot nobody reads: found by the background scrub, marked stale and repaired by the controller', { skip }, async (t) => {
  const zk = (await startZk(t)).connectString
  const scrubArgs = ['--scrub-mbps', '100', '--scrub-interval-ms', '1500']
  const nodes = await Promise.all(['a1', 'a2', 'a3'].map(async id => await startNode(t, { zk, id, site: 'site-a', extraArgs: scrubArgs })))
  const a2 = nodes[1]
  // The agent only serves the mount; the standalone controller is the one acting.
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-auto-repair', '--no-controller'] })
  const ctl = await startController(t, { zk, host: 'ctl-1', extraArgs: ['--scrub-findings-interval-ms', '1000', '--repair-interval-ms', '1000'] })
  t.teardown(() => { if (!t.passing()) t.comment(fs.readFileSync(ctl.logFile, 'utf8').split('\n').slice(-30).join('\n')) })
  await cliOk(t, ['disk', 'create', 'vol', '--size', '4M', '--block-size', '256K', '--replicas', '3', '--nodes', 'a1,a2,a3'], zk)
  const file = path.join(agent.mountPoint, 'vol')
  const model = randomBytes(rng(33), SIZE)
  const fh = await fs.promises.open(file, 'r+')
  try {
    await fh.write(model, 0, SIZE, 0)
    await fh.sync()
  } finally { await fh.close() }
  const uuid = (await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)).uuid

  const victim = blockFile(a2, uuid, 6)
  flipByte(victim, 70_000)
  t.notSame(fs.readFileSync(victim), model.subarray(6 * BLOCK, 7 * BLOCK), 'a2\'s copy of block 6 is rotten')
  // Nobody reads the disk from here on; only the scrub can find it.
  await until('the controller marked the rotten replica stale (disk scrub record)', async () => {
    const info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
    return (info.scrub?.markedStaleTotal ?? 0) >= 1
  }, 60_000, 300)
  t.pass('marked stale without an operator')
  await until('a2\'s block 6 repaired with the right bytes, every replica in sync', async () => {
    if (!fs.readFileSync(blockFile(a2, uuid, 6)).equals(model.subarray(6 * BLOCK, 7 * BLOCK))) return false
    for (const n of ['a1', 'a2', 'a3']) if (!(await replicaStates(zk, 'vol', n)).every(s => s === 'in-sync')) return false
    return true
  }, 60_000, 500)
  t.pass('repaired: the block file holds the model\'s bytes and every block has its 3 in-sync replicas')
  const info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
  t.equal(info.scrub?.markedStaleTotal, 1, 'exactly one replica was marked stale')
  await until('controller status: the scrub-findings duty counts it', async () => {
    const state = await cliJson<ControllerState>(['controller', 'status', '--json'], zk)
    return state.leader?.duties.find(d => d.name === 'scrub-findings')?.detail?.markedStale === 1
  }, 10_000, 500)
  t.pass('controller status shows the stale mark')

  const got = await fs.promises.readFile(file)
  t.ok(got.equals(model), 'the whole disk reads back byte for byte')
})
