// Issue 11: "a node full during re-replication (clear status, nothing lost, continues when space
// frees)". a2 is killed for good; after the (short) down-out time the controller moves its
// replicas to a3, the only node left with room for a block — but a3 (`--capacity 6M`, 4 MiB
// taken by another disk) fills up half-way through the copy. The relocation stops with a reason
// naming the full node, `disk info` shows the blocks below their replica count, nothing the VM
// wrote is lost (a1 serves it all). Deleting the other disk frees a3, and the re-replication
// finishes by itself: two in-sync replicas of every block, every byte as written.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startController, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { replicaStates } from './helpers/replica-faults'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const SIZE = 4 * MiB

interface Info { belowReplicaBlocks: number, staleBlocks: number, replicasPerNode: Record<string, { inSync: number, state: string }> }
interface Reloc { state: string, reason: string, targetNodes: string[] }

t.test('a node full during re-replication: clear status, nothing lost, continues when space frees', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = (await startZk(t)).connectString
  await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a', extraArgs: ['--zk-session-timeout-ms', '2000'] })
  await startNode(t, { zk, id: 'a3', site: 'site-a', capacity: '6M' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-controller'] })
  const ctl = await startController(t, { zk, host: 'ctl-1', extraArgs: ['--repair-interval-ms', '2000'] })
  t.teardown(() => { if (!t.passing()) t.comment(fs.readFileSync(ctl.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-30).join('\n')) })
  await cliOk(t, ['config', 'set', 'down-out-ms', '3000'], zk)

  // filler: 4 MiB on a3 alone. vol: a1 + a2, every byte written, then closed (the controller runs its moves).
  await cliOk(t, ['disk', 'create', 'filler', '--size', '4M', '--block-size', '256K', '--replicas', '1', '--nodes', 'a3'], zk)
  await cliOk(t, ['disk', 'create', 'vol', '--size', '4M', '--block-size', '256K', '--nodes', 'a1,a2'], zk)
  const model = randomBytes(rng(77), SIZE)
  for (const [name, data] of [['filler', randomBytes(rng(78), SIZE)], ['vol', model]] as const) {
    const fh = await fs.promises.open(path.join(agent.mountPoint, name), 'r+')
    try { await fh.write(data, 0, SIZE, 0); await fh.sync() } finally { await fh.close() }
  }

  await a2.kill('SIGKILL')
  const stuck = await untilValue('the re-replication onto a3 stops on the full node', async () => {
    const r = (await cliJson<Reloc[]>(['relocate', 'status', 'vol', '--json'], zk).catch(() => undefined))?.[0]
    return r !== undefined && r.state === 'paused' ? r : undefined
  }, 90_000, 500)
  t.same(stuck.targetNodes.includes('a3'), true, `the move went to a3 (targets ${stuck.targetNodes.join(',')})`)
  t.match(stuck.reason, /a3.*(full|capacity|space)/i, `relocate status names the full node: ${stuck.reason}`)
  let info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
  // a2's replicas still count in the map (they are what the move replaces); disk info shows its
  // node down and a3 holding only part of the disk.
  t.equal(info.replicasPerNode.a2?.state, 'down', 'disk info: a2\'s replicas are on a node that is down')
  t.ok((info.replicasPerNode.a3?.inSync ?? 0) < 16, `disk info: a3 holds ${info.replicasPerNode.a3?.inSync ?? 0} of 16 blocks in sync`)
  const read = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.ok(read.equals(model), 'nothing lost: every byte reads back while a3 is full')

  const del = await runCli(['disk', 'delete', 'filler'], { zk })
  t.equal(del.code, 0, `disk delete filler frees a3: ${del.stderr}`)
  info = await untilValue('vol has two in-sync replicas of every block again', async () => {
    const i = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
    return i.belowReplicaBlocks === 0 && i.staleBlocks === 0 && i.replicasPerNode.a2 === undefined ? i : undefined
  }, 120_000, 1000)
  t.same(Object.keys(info.replicasPerNode).sort(), ['a1', 'a3'], 'a2\'s place went to a3')
  t.ok((await replicaStates(zk, 'vol', 'a3')).every(s => s === 'in-sync'), 'every block in sync on a3')
  const again = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.ok(again.equals(model), 'every byte as written after the re-replication')
})
