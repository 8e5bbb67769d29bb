// Replicated metadata (issue 11 part 6): with a three-member ZooKeeper ensemble, losing one
// member changes nothing a user sees. A model writer writes through the mount while the leader,
// then a follower, is killed -9 and restarted; the CLI works meanwhile; no write fails, every
// byte is verified, and the daemons' sessions (leases, liveness) survive.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { ModelWriter } from './helpers/model-writer'

interface Info { leaseHolder: string | null, leaseEpoch: number, staleBlocks: number }
interface NodeRow { id: string, alive: object | null }

const DISK_BYTES = 16 * 1024 * 1024
const MEMBER_DOWN_MS = 4000 // several ticks and longer than a leader election takes here
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('a three-member ensemble loses its leader, then a follower, under writes: nothing fails', async (t) => {
  const zk = await startZk(t, { ensemble: 3 })
  t.equal(zk.connectString.split(',').length, 3, `the connect string lists every member: ${zk.connectString}`)
  t.same((await Promise.all(zk.members.map(async m => await m.mode()))).sort(), ['follower', 'follower', 'leader'], 'one leader, two followers')
  const nodes = [await startNode(t, { zk, id: 'a1', site: 's' }), await startNode(t, { zk, id: 'a2', site: 's' })]
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 's' })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').filter(l => l.includes('"level":40') || l.includes('"level":50')).slice(-30).join('\n')) })
  const created = await runCli(['disk', 'create', 'vol', '--size', String(DISK_BYTES), '--site', 's'], { zk: zk.connectString })
  t.equal(created.code, 0, created.stderr)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const writer = new ModelWriter(fh, DISK_BYTES, { seed: 11, maxWriteBytes: 64 * 1024, pauseMs: 5 })
  await writer.writeOnce()
  const start = await cliJson<Info>(['disk', 'info', 'vol'], zk.connectString)
  t.equal(start.leaseHolder, 'hv-a')

  writer.start()
  for (const role of ['leader', 'follower'] as const) {
    const victim = role === 'leader' ? await zk.leader() : await (async () => {
      for (const m of zk.members) if (await m.mode() === 'follower') return m
      throw new Error('no follower')
    })()
    const writesBefore = writer.stats.writes
    const failedBefore = writer.stats.writesFailed
    await victim.kill('SIGKILL')
    await sleep(MEMBER_DOWN_MS / 2)
    // What a user does meanwhile: the CLI reads and changes metadata.
    const info = await runCli(['disk', 'info', 'vol', '--json'], { zk: zk.connectString })
    t.equal(info.code, 0, `${role} ${victim.id} down: disk info works (${info.stderr.trim()})`)
    const made = await runCli(['disk', 'create', `during-${role}`, '--size', '4M', '--site', 's'], { zk: zk.connectString })
    t.equal(made.code, 0, `${role} ${victim.id} down: disk create works (${made.stderr.trim()})`)
    await sleep(MEMBER_DOWN_MS / 2)
    const during = writer.stats.writes - writesBefore
    await victim.restart()
    t.ok(['leader', 'follower'].includes(await victim.mode() ?? ''), `member ${victim.id} is back as ${await victim.mode()}`)
    t.ok(during > 0, `writes went on while the ${role} was down (${during})`)
    t.equal(writer.stats.writesFailed, failedBefore, `no write failed while the ${role} was down`)
    t.ok(await zk.leader() !== undefined, 'the ensemble has a leader')
  }
  await writer.stop()
  await fh.sync()
  t.equal(writer.stats.writesFailed, 0, `no write failed at all (${writer.stats.writes} writes, longest ${writer.stats.longestStallMs} ms): ${writer.stats.failures.join('; ')}`)
  const v = await writer.verify()
  t.equal(v.bytesLost, 0, 'no byte lost')
  t.equal(v.bytesVerified, DISK_BYTES, `every byte verified (${v.bytesVerified})`)

  const end = await cliJson<Info>(['disk', 'info', 'vol'], zk.connectString)
  t.same([end.leaseHolder, end.leaseEpoch, end.staleBlocks], ['hv-a', start.leaseEpoch, 0], 'the lease stayed with the agent at the same epoch; no replica stale')
  const rows = await cliJson<NodeRow[]>(['node', 'list'], zk.connectString)
  t.same(rows.map(r => [r.id, r.alive !== null]), nodes.map(n => [n.id, true]), 'both nodes stayed alive (their sessions survived)')
  const disks = (await cliJson<Array<{ name: string }>>(['disk', 'list'], zk.connectString)).map(d => d.name).sort()
  t.same(disks, ['during-follower', 'during-leader', 'vol'], 'the disks created while a member was down are there')
})
