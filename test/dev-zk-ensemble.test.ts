// `ukai dev up --zk-ensemble 3` (issue 11 part 6) and the credentials `dev up` makes (issue 12
// part 5), as a user runs them: three ZooKeeper members each in its own dir with its own myid and
// ports, all in the connect string, every one stopped by `dev down`; DIR/zk-auth (mode 0600)
// given to every daemon and printed for the CLI.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { readCluster } from '../src/dev/cluster'
import { isAlive } from '../src/dev/pids'
import { memberMode } from '../src/dev/zookeeper-ensemble'
import { fuseUnavailable, makeTempDir, missingCli } from './helpers/cluster'
import { runCli } from './helpers/cli'

const skip = missingCli('dev') ?? fuseUnavailable()
const DEV_UP_TIMEOUT_MS = 180_000

t.test('dev up --zk-ensemble 3: three members, credentials for the CLI, dev down stops all', { skip: skip ?? false }, async (t) => {
  const dir = makeTempDir(t, 'dev-ensemble')
  t.teardown(async () => { await runCli(['dev', 'down', '--dir', dir], { timeoutMs: 60_000 }) })

  const bad = await runCli(['dev', 'up', '--dir', dir, '--zk-ensemble', '2', '--detach'])
  t.equal(bad.code, 2, 'an ensemble of 2: exit 2')
  t.match(bad.stderr, /--zk-ensemble must be 1, 3, 5/)
  t.notOk(fs.existsSync(path.join(dir, 'cluster.json')), 'nothing started')

  const up = await runCli(['dev', 'up', '--dir', dir, '--sites', '1', '--nodes-per-site', '2', '--zk-ensemble', '3', '--detach'], { timeoutMs: DEV_UP_TIMEOUT_MS })
  t.equal(up.code, 0, up.stderr)
  const info = readCluster(dir)
  if (info === null) throw new Error('no cluster.json')
  const members = info.zk.members ?? []
  t.equal(members.length, 3, 'three members in cluster.json')
  t.equal(info.zk.connectString, members.map(m => `127.0.0.1:${m.port}`).join(','), 'the connect string lists all three')
  t.equal(new Set(members.map(m => m.dir)).size, 3, 'each its own dir')
  t.same(members.map(m => fs.readFileSync(path.join(m.dir, 'data', 'myid'), 'utf8').trim()), ['1', '2', '3'], 'each its own myid')
  t.same((await Promise.all(members.map(async m => await memberMode(m.port)))).sort(), ['follower', 'follower', 'leader'], 'a leader and two followers')
  t.match(up.stdout, new RegExp(`export UKAI_ZK=${info.zk.connectString}`))

  const authFile = path.join(dir, 'zk-auth')
  t.equal(info.zkAuthFile, authFile)
  t.equal(fs.statSync(authFile).mode & 0o777, 0o600, 'the credentials file is mode 0600')
  t.match(up.stdout, new RegExp(`export UKAI_ZK_AUTH=${authFile}`), 'dev up prints how the CLI finds the credentials')
  for (const p of [...info.nodes, ...info.agents]) t.same(p.argv.slice(p.argv.indexOf('--zk-auth'), p.argv.indexOf('--zk-auth') + 2), ['--zk-auth', authFile], `${path.basename(p.logFile)} of ${'id' in p ? p.id : p.host} runs with it`)

  const create = await runCli(['disk', 'create', 'd1', '--size', '8M', '--zk-auth', authFile], { zk: info.zk.connectString })
  t.equal(create.code, 0, `the CLI works with the cluster's file: ${create.stderr}`)
  const fd = fs.openSync(path.join(info.agents[0].mountPoint, 'd1'), 'r+')
  const data = Buffer.alloc(65536, 0xa5)
  fs.writeSync(fd, data, 0, data.length, 4096)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  t.ok(fs.readFileSync(path.join(info.agents[0].mountPoint, 'd1')).subarray(4096, 4096 + data.length).equals(data), 'the mount writes and reads')
  const other = await runCli(['disk', 'list'], { zk: info.zk.connectString }) // the test's own credentials
  t.equal(other.code, 1, 'other credentials: refused')
  t.match(other.stderr, /refused access/)

  const pids = [...members.map(m => m.pid), ...info.nodes.map(n => n.pid), ...info.agents.map(a => a.pid)]
  const down = await runCli(['dev', 'down', '--dir', dir], { timeoutMs: 60_000 })
  t.equal(down.code, 0, down.stderr)
  t.match(down.stdout, /zookeeper member 1.*\n[^]*zookeeper member 3/)
  for (const pid of pids) t.notOk(isAlive(pid), `pid ${pid} stopped`)
})
