// `ukai dev up/down` and the cluster fixtures against the real daemons (ukai storagenode, ukai
// mount). Skipped, with the reason, until dist/src/cli/main.js has both commands.
// test/dev-tooling.test.ts covers the same code against a stand-in daemon and always runs.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { devDown, devUp, readCluster } from '../src/dev/cluster'
import { isAlive } from '../src/dev/pids'
import { issueCert } from '../src/security/ca'
import { runCli } from './helpers/cli'
import { fuseUnavailable, isMounted, makeTempDir, missingCli, startCluster } from './helpers/cluster'

const skip = missingCli('storagenode') ?? missingCli('mount') ?? fuseUnavailable()
if (skip !== null) t.comment(`skipping the real-daemon dev cluster tests: ${skip}`)

t.test('devUp / devDown with the real daemons', { skip: skip ?? false }, async (t) => {
  const dir = makeTempDir(t, 'devup')
  t.teardown(async () => { await devDown({ dir }) })

  const info = await devUp({ dir, sites: 2, nodesPerSite: 2 })
  t.same(info.nodes.map((n) => [n.id, n.site]), [['a1', 'site-a'], ['a2', 'site-a'], ['b1', 'site-b'], ['b2', 'site-b']])
  t.same(info.agents.map((a) => [a.host, a.site]), [['hv-a', 'site-a'], ['hv-b', 'site-b']])
  for (const n of info.nodes) t.match(n.address, /^127\.0\.0\.1:\d+$/, `node ${n.id} address`)
  for (const a of info.agents) t.ok(isMounted(a.mountPoint), `${a.mountPoint} is mounted`)
  t.same(readCluster(dir), info, 'cluster.json holds what devUp returned')
  await t.rejects(devUp({ dir }), { code: 'ALREADY_EXISTS' })

  // Every agent serves the tenant API: a tenant's certificate of the dev CA lists its (no) disks
  // through it, without ZooKeeper credentials.
  const tenantDir = (await issueCert(path.join(dir, 'tls', 'ca'), { role: 'tenant', name: 'devtenant' }, { outDir: path.join(dir, 'tenant') })).dir
  for (const a of info.agents) {
    t.match(a.apiAddress, /^127\.0\.0\.1:\d+$/, `agent ${a.host} serves the tenant API`)
    const r = await runCli(['--api', a.apiAddress as string, 'disk', 'list', '--json'], { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: tenantDir })
    t.equal(r.code, 0, r.stderr)
    t.same(JSON.parse(r.stdout), [], 'the tenant sees no disk')
  }

  const pids = [info.zk.pid, ...info.nodes.map((n) => n.pid), ...info.agents.map((a) => a.pid)]
  await devDown({ dir })
  for (const pid of pids) t.notOk(isAlive(pid), `pid ${pid} stopped`)
  for (const a of info.agents) t.notOk(isMounted(a.mountPoint), `${a.mountPoint} unmounted`)
  t.notOk(fs.existsSync(path.join(dir, 'cluster.json')))
  t.same((await devDown({ dir })).found, false, 'second devDown is a no-op')
})

t.test('startCluster fixture with the real daemons', { skip: skip ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2 })
  t.equal(c.nodes.length, 4)
  t.equal(c.agents.length, 2)
  for (const a of c.agents) t.ok(isMounted(a.mountPoint))

  const a1 = c.node('a1')
  const before = a1.pid
  await a1.kill('SIGKILL')
  t.notOk(isAlive(before))
  await a1.restart()
  t.ok(isAlive(a1.pid))
})
