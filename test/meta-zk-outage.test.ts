// ZooKeeper trouble: a restart of the server (I/O on open disks goes on: writes never touch
// ZooKeeper), and expired sessions (daemons open a new session and re-create their ephemerals).
// A lease held through an expiry is re-asserted at its epoch: test/meta-zk-outage-writes.test.ts.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until as untilTrue } from './helpers/until'

interface Info { leaseHolder: string | null, leaseEpoch: number }
interface NodeRow { id: string, alive: unknown }

const SESSION = ['--zk-session-timeout-ms', '2000']

const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => await untilTrue(what, check, timeoutMs, 250)

t.test('ZooKeeper restart and session expiry', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const nodes = [await startNode(t, { zk, id: 'a1', site: 'site-a', extraArgs: SESSION }), await startNode(t, { zk, id: 'a2', site: 'site-a', extraArgs: SESSION })]
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: SESSION })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '4M', '--site', 'site-a'], { zk: zks })).code, 0)
  const file = path.join(a.mountPoint, 'vol')

  t.test('I/O on an open disk goes on while ZooKeeper is down', async (t) => {
    const fh = await fs.promises.open(file, 'r+')
    t.teardown(() => fh.close().catch(() => {}))
    await fh.write(Buffer.alloc(4096, 1), 0, 4096, 0)
    await zk.kill('SIGKILL')
    await fh.write(Buffer.alloc(4096, 2), 0, 4096, 4096)
    const got = Buffer.alloc(8192)
    await fh.read(got, 0, 8192, 0)
    t.ok(got.subarray(0, 4096).every(x => x === 1) && got.subarray(4096).every(x => x === 2), 'writes and reads work without ZooKeeper')
    await zk.restart()
    // The restored server may still list the nodes' old sessions, which expire if a loaded machine
    // kept the nodes from reconnecting in time; they then re-register. A create in that window is
    // refused ("too few live nodes", nothing changed), so retry until the cluster has settled.
    let lastError = ''
    await until('a disk create to succeed again', async () => {
      const created = await runCli(['disk', 'create', 'after', '--size', '1M'], { zk: zks })
      lastError = created.stderr.trim()
      return created.code === 0
    }).catch((err: Error) => { throw new Error(`${err.message}; last error: ${lastError}`) })
    t.pass('metadata changes work again')
    await fh.write(Buffer.alloc(4096, 3), 0, 4096, 8192)
    await fh.sync()
    t.pass('writes and fsync after the restart')
  })

  t.test('a storage node whose session expired comes back alive', async (t) => {
    await nodes[1].kill('SIGSTOP')
    t.teardown(() => nodes[1].kill('SIGCONT'))
    await until('a2 to be seen dead', async () => (await cliJson<NodeRow[]>(['node', 'list'], zks)).find(r => r.id === 'a2')?.alive === null)
    t.pass('its liveness vanished with its session')
    await nodes[1].kill('SIGCONT')
    await until('a2 alive again', async () => (await cliJson<NodeRow[]>(['node', 'list'], zks)).find(r => r.id === 'a2')?.alive !== null)
    t.pass('it opened a new session and re-registered')
  })

  t.test('an agent whose session expired (its disk closed) takes a new epoch at its next write', async (t) => {
    // On failure, show what the agent logged (its temp dir is gone after teardown).
    t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(a.logFile, 'utf8').split('\n').slice(-40).join('\n')) })
    const fh = await fs.promises.open(file, 'r+')
    await fh.write(Buffer.alloc(4096, 4), 0, 4096, 0)
    const before = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    t.equal(before.leaseHolder, 'hv-a')
    await fh.close() // a descriptor on a stopped FUSE daemon would hang our next fork
    await a.kill('SIGSTOP')
    let resumed = false
    t.teardown(async () => { if (!resumed) await a.kill('SIGCONT') })
    await until('the lease to vanish with the session', async () => (await cliJson<Info>(['disk', 'info', 'vol'], zks)).leaseHolder === null)
    await a.kill('SIGCONT')
    resumed = true
    const fh2 = await fs.promises.open(file, 'r+')
    t.teardown(() => fh2.close().catch(() => {}))
    await fh2.write(Buffer.alloc(4096, 5), 0, 4096, 0)
    const after = await cliJson<Info>(['disk', 'info', 'vol'], zks)
    t.equal(after.leaseHolder, 'hv-a', 'the agent holds the lease again')
    t.ok(after.leaseEpoch > before.leaseEpoch, `with a new epoch (${before.leaseEpoch} → ${after.leaseEpoch})`)
    const got = Buffer.alloc(12288)
    await fh2.read(got, 0, got.length, 0)
    t.ok(got.subarray(0, 4096).every(x => x === 5) && got.subarray(4096, 8192).every(x => x === 2) && got.subarray(8192).every(x => x === 3), 'every acknowledged write is there')
    fs.writeFileSync(path.join(a.mountPoint, 'after'), Buffer.alloc(512, 6), { flag: 'r+' })
    t.pass('the new session\'s watches serve new files too')
  })
})
