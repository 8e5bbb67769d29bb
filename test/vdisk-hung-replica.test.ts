// A replica that stops answering (SIGSTOP) under a stream of writes: the writes wait for it at
// most the hung bound (REPLICA_HUNG_MS_DEFAULT, 2.5 s) once, not the 10 s call deadline per newly
// touched block; it is marked stale for the whole disk in one go; the other replica takes every
// write; fsync does not wait for it either; after SIGCONT every acknowledged byte reads back,
// and a2 is repaired (in sync for every block) with no operator command.
// And a replica killed (-9) with writes in flight from several writers at once. And the calls
// whose answer is due only when long work ends (a disk's Scrub, PruneVersions): a node silent on
// one of them past the hung bound is not hung.
import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { isUkaiError } from '../src/errors'
import { REPLICA_HUNG_MS_DEFAULT, StorageClient } from '../src/storagenode/client'
import { fuseUnavailable, startAgent, startNode, startZk, type AgentFixture, type NodeFixture, type TestLike } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { diffAgainstModel, replicaStates, runWriters } from './helpers/replica-faults'
import { until } from './helpers/until'

const KiB = 1024
const MiB = 1024 * KiB
// Generous: the bound is 2.5 s; before it, every newly touched block waited the 10 s deadline.
// Two cores shared with three other engineers' tests: assert well under 10 s, report the figure.
const LONGEST_STALL_MAX_MS = 7_000
const HUNG_FOR_MS = 8_000

interface Info { staleBlocks: number, replicasPerNode: Record<string, { inSync: number, stale: number }> }

const skip = fuseUnavailable()

const sizeBytes = 32 * MiB
const blockSizeBytes = 256 * KiB

// ZooKeeper, nodes a1 and a2, an agent, and 'vol' (32 MiB, 256 KiB blocks) on a1+a2, open r+.
async function setup (t: TestLike & { equal: (found: unknown, wanted: unknown, msg: string) => unknown }): Promise<{ zks: string, a2: NodeFixture, agent: AgentFixture, fh: fs.promises.FileHandle, model: Buffer, unknown: Array<{ off: number, len: number }> }> {
  const zk = await startZk(t)
  const zks = zk.connectString
  await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  const res = await runCli(['disk', 'create', 'vol', '--size', '32M', '--block-size', '256K', '--nodes', 'a1,a2'], { zk: zks })
  t.equal(res.code, 0, res.stderr)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  return { zks, a2, agent, fh, model: Buffer.alloc(sizeBytes), unknown: [] }
}

t.test('a hung replica (SIGSTOP) under writes costs at most the hung bound', { skip: skip ?? false }, async (t) => {
  const { zks, a2, agent, fh, model, unknown } = await setup(t)
  let stopped = false
  t.teardown(async () => { if (stopped) await a2.kill('SIGCONT') })

  let stopAtMs: number | null = null
  let endAtMs = Infinity
  const writing = runWriters({ fh, sizeBytes, blockSizeBytes, writers: 4, seed: 11, model, unknown, stop: () => Date.now() >= endAtMs, markAtMs: () => stopAtMs })
  await new Promise(resolve => setTimeout(resolve, 1500))
  await a2.kill('SIGSTOP')
  stopped = true
  stopAtMs = Date.now()
  endAtMs = stopAtMs + HUNG_FOR_MS
  const stats = await writing
  const syncStarted = Date.now()
  await fh.sync()
  const fsyncMs = Date.now() - syncStarted
  t.comment(`measured: ${stats.writes} writes, ${(stats.bytesWritten / MiB).toFixed(1)} MiB in ${((Date.now() - stopAtMs + 1500) / 1000).toFixed(1)} s, longest write ${stats.longestWriteMs} ms, fsync with a2 hung ${fsyncMs} ms`)
  t.equal(stats.failures, 0, 'no write failed')
  t.ok(stats.longestWriteMs < LONGEST_STALL_MAX_MS, `longest write ${stats.longestWriteMs} ms < ${LONGEST_STALL_MAX_MS} ms (bound 2.5 s; was 10 s per block)`)
  t.ok(fsyncMs < LONGEST_STALL_MAX_MS, `fsync with a2 hung took ${fsyncMs} ms`)
  t.ok(stats.blocksAfterMark.size > 8, `writes went on after a2 hung (${stats.blocksAfterMark.size} blocks touched)`)

  const states = await replicaStates(zks, 'vol', 'a2')
  const missedNotStale = [...stats.blocksAfterMark].filter(b => states[b] !== 'stale')
  t.same(missedNotStale, [], 'a2 is stale for every block written while it hung')
  t.ok(states.every(s => s === 'stale'), 'marked stale once for the whole disk (a1 in sync everywhere)')
  const info = await cliJson<Info>(['disk', 'info', 'vol'], zks)
  t.equal(info.replicasPerNode.a1.stale, 0, 'a1 never went stale')
  const agentLog = fs.readFileSync(agent.logFile, 'utf8')
  const markings = agentLog.split('\n').filter(l => l.includes('hung replica marked stale')).length
  t.ok(markings >= 1 && markings <= 4, `one sweep marked it (${markings} sweep log lines; concurrent writes may each find nothing left)`)

  await a2.kill('SIGCONT')
  stopped = false
  const got = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  const diff = diffAgainstModel(got, model, unknown)
  t.equal(diff.bytes, 0, `every acknowledged byte reads back after SIGCONT (first difference at ${diff.first})`)
  // Writes after it resumed do not go to it (stale) and do not wait.
  const started = Date.now()
  await fh.write(Buffer.alloc(64 * KiB, 7), 0, 64 * KiB, 0)
  await fh.sync()
  t.ok(Date.now() - started < LONGEST_STALL_MAX_MS, `write + fsync after SIGCONT: ${Date.now() - started} ms`)
  Buffer.alloc(64 * KiB, 7).copy(model, 0)
  // Healed with no operator command: the controller (the agent leads it) repairs a2's stale
  // replicas at its next sweep (a hung node never left the live list: no "node back" trigger).
  const healStarted = Date.now()
  await until('a2 in sync again for every block', async () => (await replicaStates(zks, 'vol', 'a2')).every(s => s === 'in-sync'), 90_000, 1000)
  t.comment(`a2 repaired ${Date.now() - healStarted} ms after SIGCONT`)
  const healed = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.equal(diffAgainstModel(healed, model, unknown).bytes, 0, 'every byte still reads back once a2 is repaired')
})

t.test('kill -9 of a replica with writes in flight from several writers', { skip: skip ?? false }, async (t) => {
  const { zks, a2, agent, fh, model, unknown } = await setup(t)

  let killAtMs: number | null = null
  let endAtMs = Infinity
  const writing = runWriters({ fh, sizeBytes, blockSizeBytes, writers: 8, seed: 23, model, unknown, stop: () => Date.now() >= endAtMs, markAtMs: () => killAtMs })
  await new Promise(resolve => setTimeout(resolve, 1500))
  killAtMs = Date.now()
  await a2.kill('SIGKILL')  // 8 writers keep requests in flight: some are cut mid-way on a2
  endAtMs = Date.now() + 3000
  const stats = await writing
  await fh.sync()
  t.comment(`measured: ${stats.writes} writes, ${(stats.bytesWritten / MiB).toFixed(1)} MiB, longest write ${stats.longestWriteMs} ms, ${stats.blocksAfterMark.size} blocks written after the kill`)
  t.equal(stats.failures, 0, 'no write failed with one replica left')
  t.ok(stats.blocksAfterMark.size > 0, 'writes went on after the kill')

  const states = await replicaStates(zks, 'vol', 'a2')
  const missedNotStale = [...stats.blocksAfterMark].filter(b => states[b] !== 'stale')
  t.same(missedNotStale, [], 'a2 is stale for every block written after it died')
  const a1 = await replicaStates(zks, 'vol', 'a1')
  t.ok(a1.every(s => s === 'in-sync'), 'a1 is in sync for every block')

  const got = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  const diff = diffAgainstModel(got, model, unknown)
  t.equal(diff.bytes, 0, `every acknowledged byte reads back (first difference at ${diff.first})`)
  await a2.restart()
  const again = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.equal(diffAgainstModel(again, model, unknown).bytes, 0, 'after a2 restarts, reads still avoid its stale (half-written) blocks')
})

t.test('fsync that is the first to meet a hung replica waits at most the hung bound', { skip: skip ?? false }, async (t) => {
  const { zks, a2, agent, fh, model, unknown } = await setup(t)
  const data = Buffer.alloc(4 * MiB, 9)
  await fh.write(data, 0, data.length, 0)
  data.copy(model, 0)
  await a2.kill('SIGSTOP')
  let stopped = true
  t.teardown(async () => { if (stopped) await a2.kill('SIGCONT') })
  const started = Date.now()
  await fh.sync()
  const fsyncMs = Date.now() - started
  t.comment(`measured: fsync with a2 just stopped ${fsyncMs} ms`)
  t.ok(fsyncMs < LONGEST_STALL_MAX_MS, `fsync took ${fsyncMs} ms (bound 2.5 s; was the 10 s deadline)`)
  const states = await replicaStates(zks, 'vol', 'a2')
  t.same(states.slice(0, 16), Array(16).fill('stale'), 'a2 is stale for the blocks it could not make durable')
  await a2.kill('SIGCONT')
  stopped = false
  const got = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.equal(diffAgainstModel(got, model, unknown).bytes, 0, 'every acknowledged byte reads back')
})

t.test('a replica that is slow but answering is not hung', { skip: skip ?? false }, async (t) => {
  const { zks, a2, agent, fh, model, unknown } = await setup(t)
  // a2 runs 0.5 s out of every 1.3 s: silent for 0.8 s at a time (even a run window it wasted
  // would make 2.1 s), under the 2.5 s bound, so it answers (writes, Ping) before the bound.
  let stopped = false
  t.teardown(async () => { if (stopped) await a2.kill('SIGCONT') })
  let endAtMs = Infinity
  const writing = runWriters({ fh, sizeBytes, blockSizeBytes, writers: 2, seed: 31, model, unknown, stop: () => Date.now() >= endAtMs, markAtMs: () => null })
  const cycleUntil = Date.now() + 8000
  while (Date.now() < cycleUntil) {
    await a2.kill('SIGSTOP')
    stopped = true
    await new Promise(resolve => setTimeout(resolve, 800))
    await a2.kill('SIGCONT')
    stopped = false
    await new Promise(resolve => setTimeout(resolve, 500))
  }
  endAtMs = 0
  const stats = await writing
  await fh.sync()
  t.comment(`measured: ${stats.writes} writes, ${(stats.bytesWritten / MiB).toFixed(1)} MiB in 8 s of 0.8 s stops, longest write ${stats.longestWriteMs} ms`)
  t.equal(stats.failures, 0, 'no write failed')
  const states = await replicaStates(zks, 'vol', 'a2')
  t.ok(states.every(s => s === 'in-sync'), `a2 stayed in sync (${states.filter(s => s === 'stale').length} stale blocks)`)
  const got = await fs.promises.readFile(path.join(agent.mountPoint, 'vol'))
  t.equal(diffAgainstModel(got, model, unknown).bytes, 0, 'every acknowledged byte reads back')
})

// A Scrub of a disk reads every byte the node holds of it, and PruneVersions walks the disk's
// version files: on a busy node either may take longer than the hung bound. Here the node answers
// nothing (SIGSTOP) for the bound + 1.5 s while one of them is the only call in flight: the node
// must not be found hung, and the call must be answered once it runs again. Before they were long
// calls, the watchdog counted them as owed, found the node hung at 2.5 s and cancelled them.
t.test('a Scrub or PruneVersions answered after the hung bound does not find the node hung', async (t) => {
  const zk = await startZk(t)
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  let stopped = false
  t.teardown(async () => { if (stopped) await a1.kill('SIGCONT') })
  const client = new StorageClient({ nodeId: 'a1', address: a1.address })
  t.teardown(() => client.close())
  await client.ping()  // connected before the node stops
  const diskUuid = randomUUID()
  const calls: Record<string, () => Promise<unknown>> = {
    Scrub: async () => await client.scrub({ diskUuid, digests: false }),
    PruneVersions: async () => await client.pruneVersions({ diskUuid, keepEpochs: [1], dropNewer: false, leaseEpoch: 0 })
  }
  for (const [name, call] of Object.entries(calls)) {
    await a1.kill('SIGSTOP')
    stopped = true
    const started = Date.now()
    const outcome = call().then(() => 'answered', (err: Error) => isUkaiError(err, 'UNAVAILABLE') ? `failed: ${err.message}` : 'answered')
    await new Promise(resolve => setTimeout(resolve, REPLICA_HUNG_MS_DEFAULT + 1500))
    t.equal(client.progress.hung, false, `${name}: a1 silent for ${Date.now() - started} ms on it is not hung`)
    await a1.kill('SIGCONT')
    stopped = false
    t.equal(await outcome, 'answered', `${name}: answered once a1 runs again`)
    t.comment(`measured: ${name} answered after ${Date.now() - started} ms`)
  }
})
