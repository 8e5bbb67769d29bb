// Ephemerals and leases around ZooKeeper trouble (issue 9): an open record left by an earlier
// session, or created twice at once, is ours — never EEXIST; a close while ZooKeeper is away does
// not wait for it, and the lease and open record go once it is back; a disk closed here opens
// again (and reads) while ZooKeeper is away.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { paths } from '../src/meta/schema'
import { MetaStore, zkOf } from '../src/meta/store'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

interface Info { leaseHolder: string | null, openOn: string[] }

t.test('holdEphemeral: concurrent holds and a leftover of another session', async (t) => {
  const zk = await startZk(t)
  const a = await MetaStore.connect(zk.connectString, { auth: processZkAuth(), sessionTimeoutMs: 4000 })
  t.teardown(() => a.close())
  const b = await MetaStore.connect(zk.connectString, { auth: processZkAuth(), sessionTimeoutMs: 4000 })
  t.teardown(() => b.close())
  const p = paths.agentAlive('twin')
  await Promise.all([a.holdEphemeral(p, () => Buffer.from('1')), a.holdEphemeral(p, () => Buffer.from('2'))])
  const stat = await zkOf(a).exists(p)
  t.equal(stat?.ephemeralOwner.toString('hex'), zkOf(a).sessionId, 'two concurrent holds: one znode, owned by our session')
  await b.holdEphemeral(p, () => Buffer.from('3'))
  const after = await zkOf(b).get(p)
  t.equal(after.stat.ephemeralOwner.toString('hex'), zkOf(b).sessionId, 'a leftover of another session is replaced')
  t.equal(after.data.toString(), '3')
})

t.test('closing a disk while ZooKeeper is away', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  await startNode(t, { zk, id: 'n1', site: 's' })
  await startNode(t, { zk, id: 'n2', site: 's' })
  const agent = await startAgent(t, { zk, host: 'hv', site: 's', extraArgs: ['--zk-session-timeout-ms', '4000'] })
  t.teardown(() => { if (!t.passing()) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').slice(-60).join('\n')) })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '8M', '--site', 's'], { zk: zks })).code, 0)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  let closed = false
  t.teardown(async () => { if (!closed) await fh.close().catch(() => {}) })
  await fh.write(Buffer.alloc(65536, 7), 0, 65536, 0)
  const held = await cliJson<Info>(['disk', 'info', 'vol'], zks)
  t.same([held.leaseHolder, held.openOn], ['hv', ['hv']], 'open and leased')
  await zk.kill('SIGKILL')
  const t0 = Date.now()
  await fh.close()
  closed = true
  // The kernel sends RELEASE after close() returned: the agent's log tells when it let go.
  await until('the agent to give the lease up', async () => /lease given up while ZooKeeper is away/.test(fs.readFileSync(agent.logFile, 'utf8')), 10_000, 100)
  t.pass(`the agent let the lease go ${Date.now() - t0} ms after the close, without waiting for ZooKeeper (the call bound is 15 s)`)
  await zk.restart()
  await until('the lease and open record to be removed', async () => {
    const r = await runCli(['disk', 'info', 'vol', '--json'], { zk: zks })
    if (r.code !== 0) return false
    const info = JSON.parse(r.stdout) as Info
    return info.leaseHolder === null && info.openOn.length === 0
  }, 30_000, 250)
  t.pass('both gone once ZooKeeper is back')
  const fh2 = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  const got = Buffer.alloc(65536)
  await fh2.read(got, 0, got.length, 0)
  t.ok(got.every(x => x === 7), 'the bytes written before are there')
  await fh2.write(Buffer.alloc(4096, 8), 0, 4096, 0)
  t.equal((await cliJson<Info>(['disk', 'info', 'vol'], zks)).leaseHolder, 'hv', 'the next write takes the lease again')
  await fh2.close()
  await until('the disk to be closed everywhere', async () => {
    const info = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    return info.leaseHolder === null && info.openOn.length === 0
  }, 10_000, 100)

  await zk.kill('SIGKILL')
  const t1 = Date.now()
  const fh3 = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  const openMs = Date.now() - t1
  t.teardown(() => fh3.close().catch(() => {}))
  t.ok(openMs < 5000, `a disk closed here opens again while ZooKeeper is away (${openMs} ms)`)
  await fh3.read(got, 0, got.length, 0)
  t.ok(got.subarray(0, 4096).every(x => x === 8) && got.subarray(4096).every(x => x === 7), 'and reads its bytes')
  await zk.restart()
  await until('its open record to appear once ZooKeeper is back', async () => {
    const r = await runCli(['disk', 'info', 'vol', '--json'], { zk: zks })
    return r.code === 0 && (JSON.parse(r.stdout) as Info).openOn.includes('hv')
  }, 30_000, 250)
  t.pass('the open record was created when ZooKeeper came back')
  await fh3.write(Buffer.alloc(4096, 9), 0, 4096, 4096)
  t.equal((await cliJson<Info>(['disk', 'info', 'vol'], zks)).leaseHolder, 'hv', 'writes take the lease once ZooKeeper is back')
})
