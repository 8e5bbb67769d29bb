// Issue 9: the relocation runner's watch on a disk's relocation record is set again after a real
// ZooKeeper session expiry. The agent holding the disk is stopped (SIGSTOP) longer than its
// session timeout, so its session and every watch of it are gone; once it is back (same lease,
// re-asserted), a relocation started from the CLI must still be picked up by its runner and
// finish, every byte verified.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { readLease } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { expireSession } from './helpers/session'
import { until, untilValue } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

const MiB = 1024 * 1024
const DISK_BYTES = 8 * MiB
const SESSION_TIMEOUT_MS = 2000
const SESSION = ['--zk-session-timeout-ms', String(SESSION_TIMEOUT_MS)]
// Generous on the shared 2 cores: 8 MiB on loopback takes well under a second.
const RELOCATION_DONE_MS = 60_000

interface Info { leaseHolder: string | null, leaseEpoch: number, replicasPerNode: Record<string, { inSync: number, stale: number }> }

t.test('a relocation started after the holder\'s session expired is run by its runner', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  await startNode(t, { zk, id: 'a1', site: 'site-a' })
  await startNode(t, { zk, id: 'b1', site: 'site-b' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: SESSION })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-40).join('\n')) })
  const created = await runCli(['disk', 'create', 'vol', '--size', '8M', '--block-size', '1M', '--replicas', '1', '--site', 'site-a'], { zk: zks })
  t.equal(created.code, 0, created.stderr)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(async () => await fh.close().catch(() => {}))
  const model = randomBytes(rng(5), DISK_BYTES)
  await fh.write(model, 0, model.length, 0)
  await fh.sync()
  const before = await cliJson<Info>(['disk', 'info', 'vol'], zks)
  t.equal(before.leaseHolder, 'hv-a', 'the agent holds the lease')

  // Watched in-process (see expireSession).
  const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  await expireSession(t, agent, async () => (await readLease(meta, 'vol')).holder === null)
  await until('the lease to be re-asserted on the new session', async () => (await readLease(meta, 'vol')).holder?.host === 'hv-a', 20_000, 100)
  t.match(fs.readFileSync(agent.logFile, 'utf8'), /replacing the ZooKeeper session/, 'the agent\'s session really expired')

  const started = await runCli(['relocate', 'vol', '--to', 'site-b', '--no-probe'], { zk: zks, timeoutMs: 60_000 })
  t.equal(started.code, 0, started.stderr)
  t.match(started.stdout, /relocation started on hv-a/, 'the CLI leaves it to the lease holder')
  const startedAtMs = Date.now()
  const done = await untilValue('the relocation to end', async () => {
    const rec = await meta.getRelocation('vol')
    return rec !== null && ['done', 'paused', 'cancelled'].includes(rec.state) ? rec : undefined
  }, RELOCATION_DONE_MS, 200)
  t.equal(done.state, 'done', `the agent's runner ran it to the end (${done.reason})`)
  t.comment(`measured: relocation after the session expiry done ${Date.now() - startedAtMs} ms after the CLI returned`)
  const after = await cliJson<Info>(['disk', 'info', 'vol'], zks)
  t.same(Object.keys(after.replicasPerNode), ['b1'], 'the disk lives on site-b only')
  t.equal(after.leaseHolder, 'hv-a', 'the agent still holds the lease')
  const got = Buffer.alloc(DISK_BYTES)
  await fh.read(got, 0, got.length, 0)
  t.equal(sha256(got), sha256(model), 'every byte verifies after the move')
})
