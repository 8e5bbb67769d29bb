// Issue 9, item 2: writes do not touch ZooKeeper. A lease holder keeps writing under its epoch
// while ZooKeeper is away (restarts of any length, its own session expiring), keeps the same
// epoch afterwards when nobody else took the lease, and is stopped only by fencing. A replica
// that fails meanwhile is not left behind silently: the write waits until its stale mark is in
// ZooKeeper (bounded), never acknowledged before.
// The long version (>= 10 outages of 10-60 s) is `npm run chaos` (bench/chaos.ts, case zk-outages).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { readLease } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { ModelWriter, isAlive } from './helpers/model-writer'
import { expireSession } from './helpers/session'
import { until } from './helpers/until'
import { startZkFaultProxy } from './helpers/zk-fault-proxy'
import { processZkAuth } from '../src/dev/process-zk-auth'

interface Info { leaseHolder: string | null, leaseEpoch: number, staleBlocks: number, replicasPerNode: Record<string, { inSync: number, stale: number }> }

const SESSION_TIMEOUT_MS = 2000
const SESSION = ['--zk-session-timeout-ms', String(SESSION_TIMEOUT_MS)]
const DISK_BYTES = 16 * 1024 * 1024
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('writes go on through ZooKeeper outages and a session expiry', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const nodes = [await startNode(t, { zk, id: 'a1', site: 's', extraArgs: SESSION }), await startNode(t, { zk, id: 'a2', site: 's', extraArgs: SESSION })]
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 's', extraArgs: SESSION })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-40).join('\n')) })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', String(DISK_BYTES), '--site', 's'], { zk: zks })).code, 0, 'disk created')
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const writer = new ModelWriter(fh, DISK_BYTES, { seed: 9, maxWriteBytes: 64 * 1024, pauseMs: 5 })
  await writer.writeOnce()
  const start = await cliJson<Info>(['disk', 'info', 'vol'], zks)
  t.equal(start.leaseHolder, 'hv-a')
  const pids = [...nodes.map(n => n.pid), agent.pid]

  const settle = async (): Promise<void> => {
    await until('the CLI to reach ZooKeeper again', async () => (await runCli(['disk', 'info', 'vol', '--json'], { zk: zks })).code === 0, 30_000, 250)
  }

  t.test('three ZooKeeper outages (one longer than the session timeout) under writes', async (t) => {
    writer.start()
    for (const outageMs of [1000, 3000, 2.5 * SESSION_TIMEOUT_MS]) {
      const failedBefore = writer.stats.writesFailed
      const writesBefore = writer.stats.writes
      await zk.kill('SIGKILL')
      await sleep(outageMs)
      const duringOutage = writer.stats.writes - writesBefore
      const t0 = Date.now()
      await zk.restart()
      await settle()
      t.comment(`outage ${outageMs} ms (+${Date.now() - t0} ms restart): ${duringOutage} writes during it, longest write so far ${writer.stats.longestStallMs} ms`)
      t.ok(duringOutage > 0, `writes went on during the ${outageMs} ms outage (${duringOutage})`)
      t.equal(writer.stats.writesFailed, failedBefore, 'no write failed')
    }
    await writer.stop()
    await fh.sync()
    t.pass('fsync after the outages')
    const info = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    t.equal(info.leaseHolder, 'hv-a', 'the agent holds the lease')
    t.equal(info.leaseEpoch, start.leaseEpoch, `at the same epoch (${start.leaseEpoch})`)
    t.equal(info.staleBlocks, 0, 'no replica was marked stale')
  })

  t.test('the agent\'s own session expires: the lease is re-asserted at the same epoch', async (t) => {
    // Watched in-process: forking (the CLI) while a FUSE daemon with an open file is stopped hangs.
    const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
    t.teardown(() => meta.close())
    writer.start()
    await sleep(300)
    await expireSession(t, agent, async () => (await readLease(meta, 'vol')).holder === null)
    await until('the lease to be re-asserted', async () => (await readLease(meta, 'vol')).holder?.host === 'hv-a', 20_000, 100)
    await sleep(500)
    await writer.stop()
    await fh.sync()
    const info = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    t.equal(info.leaseHolder, 'hv-a', 'the agent holds the lease')
    t.equal(info.leaseEpoch, start.leaseEpoch, `at the same epoch after its session expired (${info.leaseEpoch})`)
    t.equal(writer.stats.writesFailed, 0, `no write failed (${writer.stats.writes} writes, longest ${writer.stats.longestStallMs} ms)`)
    t.match(fs.readFileSync(agent.logFile, 'utf8'), /lease re-asserted on the new ZooKeeper session/, 'the log says so')
    // The holder commits snapshots: its request watch was set again on the new session.
    const snap = await runCli(['snapshot', 'create', 'vol@after-expiry'], { zk: zks, timeoutMs: 60_000 })
    t.equal(snap.code, 0, `a snapshot is committed by the holder after its session expired ${snap.stderr}`)
    t.equal((await cliJson<Info>(['disk', 'info', 'vol'], zks)).leaseHolder, 'hv-a', 'and it still holds the lease')
  })

  t.test('a replica that fails while ZooKeeper is away: no acknowledgement before its stale mark', async (t) => {
    const victim = nodes[1]
    const victimPid = victim.pid
    await zk.kill('SIGKILL')
    await victim.kill('SIGKILL')
    t.teardown(async () => { if (!isAlive(victim.pid)) await victim.restart() })
    const data = Buffer.alloc(64 * 1024, 0x5a)
    let settled = false
    const t0 = Date.now()
    const write = writer.write(0, data).finally(() => { settled = true })
    await sleep(3000)
    t.notOk(settled, 'the write is not acknowledged while its stale mark cannot be recorded')
    await zk.restart()
    const ok = await write
    t.comment(`the write ${ok ? 'completed' : 'failed'} ${Date.now() - t0} ms after it was issued`)
    await settle()
    const info = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    if (ok) {
      t.ok(info.staleBlocks >= 1 && (info.replicasPerNode.a2?.stale ?? 0) >= 1, `acknowledged, so a2 is stale in the map (${JSON.stringify(info.replicasPerNode)})`)
    } else {
      t.pass('failed with EIO (ZooKeeper took longer than the bound)')
    }
    await victim.restart()
    await fh.sync()
    const v = await writer.verify()
    t.equal(v.bytesLost, 0, `every byte matches the model (${v.bytesVerified} verified, first mismatch ${v.firstMismatchAt})`)
    for (const pid of pids.filter(p => p !== victimPid)) t.ok(isAlive(pid), `pid ${pid} (agent or node a1) survived every outage`)
  })
})

t.test('a holder deposed while cut off from ZooKeeper is fenced and drops the lease', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const proxy = await startZkFaultProxy(t, zks)
  await startNode(t, { zk, id: 'n1', site: 's', extraArgs: SESSION })
  await startNode(t, { zk, id: 'n2', site: 's', extraArgs: SESSION })
  // hv-a reaches ZooKeeper only through the proxy (so it alone can be cut off); hv-b directly.
  const a = await startAgent(t, { zk: proxy.connectString, host: 'hv-a', site: 's', extraArgs: SESSION })
  const b = await startAgent(t, { zk, host: 'hv-b', site: 's', extraArgs: SESSION })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(a.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-30).join('\n')) })
  t.equal((await runCli(['disk', 'create', 'dep', '--size', '8M', '--site', 's'], { zk: zks })).code, 0)
  const fa = await fs.promises.open(path.join(a.mountPoint, 'dep'), 'r+')
  t.teardown(() => fa.close().catch(() => {}))
  await fa.write(Buffer.alloc(65536, 1), 0, 65536, 0)
  const before = await cliJson<Info>(['disk', 'info', 'dep'], zks)
  t.equal(before.leaseHolder, 'hv-a')

  proxy.cut()
  await until('hv-a\'s session to expire on the server (its lease znode gone)', async () => (await cliJson<Info>(['disk', 'info', 'dep'], zks)).leaseHolder === null, 30_000, 250)
  const fb = await fs.promises.open(path.join(b.mountPoint, 'dep'), 'r+')
  t.teardown(() => fb.close().catch(() => {}))
  await fb.write(Buffer.alloc(65536, 2), 0, 65536, 0)
  const taken = await cliJson<Info>(['disk', 'info', 'dep'], zks)
  t.equal(taken.leaseHolder, 'hv-b', 'hv-b took the lease')
  t.ok(taken.leaseEpoch > before.leaseEpoch, `at a newer epoch (${before.leaseEpoch} → ${taken.leaseEpoch})`)

  const err = await fa.write(Buffer.alloc(65536, 3), 0, 65536, 65536).then(() => null, (e: NodeJS.ErrnoException) => e)
  t.equal(err?.code, 'EIO', 'the deposed holder\'s next write fails with EIO (the nodes fenced it)')
  proxy.heal()
  await until('hv-a to log that it dropped the lease', async () => /"msg":"lease lost"/.test(fs.readFileSync(a.logFile, 'utf8')), 10_000, 250)
  t.pass('it dropped the lease')
  const after = await cliJson<Info>(['disk', 'info', 'dep'], zks)
  t.equal(after.leaseHolder, 'hv-b', 'hv-b still holds it')
  t.equal(after.leaseEpoch, taken.leaseEpoch, 'at its epoch')
  const got = Buffer.alloc(131072)
  await fb.read(got, 0, got.length, 0)
  t.ok(got.subarray(0, 65536).every(x => x === 2), 'hv-b\'s write is there')
  t.ok(got.subarray(65536).every(x => x === 0), 'the fenced write did not land')
  t.ok(isAlive(a.pid) && isAlive(b.pid), 'both agents alive')
})
