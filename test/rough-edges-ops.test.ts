// Issue 14 part 6, the rough edges of installing and running UKAI, as an operator meets them
// (the real CLI and daemons):
// - `libvirt install-hook` run again keeps hook.conf (each flag given replaces its setting, the
//   others stay) and checks it: ZooKeeper reachable, the agent registered and running, its
//   mount present — each problem named, none stopping the install;
// - `dev down` stops a storage node restarted with the command the demo printed (another pid
//   than the one cluster.json recorded; found through the pid file the node writes).
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { readCluster } from '../src/dev/cluster'
import { isAlive } from '../src/dev/pids'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { fuseUnavailable, makeTempDir, processZkAuth, startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { adminTlsDir } from './helpers/tls'

interface Installed { configWritten: boolean, problems: string[], settings: { zk: string, host: string, mounts: string[], timeoutMs: number, logFile: string, rateBytesPerSec: number } }

t.test('libvirt install-hook run again keeps hook.conf and checks it', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 1 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const dir = makeTempDir(t, 'hook')
  const hooksDir = path.join(dir, 'hooks')
  const conf = path.join(dir, 'hook.conf')
  const log = path.join(dir, 'hook.log')
  const install = async (...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> =>
    await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf, ...args], { zk })

  const first = await install('--host', 'hv-a', '--mount', a.mountPoint, '--rate', '50', '--timeout-ms', '6000', '--log', log)
  t.equal(first.code, 0, first.stderr)
  t.equal(first.stderr, '', 'no problem to report')
  t.match(first.stdout, /checked: ZooKeeper reachable, the agent registered and running, its mount present/)
  const written = fs.readFileSync(conf, 'utf8')

  // Run again (an upgrade, a script run twice) with one flag: that setting changes, nothing else.
  const again = await install('--timeout-ms', '7000', '--json')
  t.equal(again.code, 0, again.stderr)
  const res = JSON.parse(again.stdout) as Installed
  t.same(res.problems, [])
  t.equal(res.configWritten, true)
  t.same({ ...res.settings }, { zk, zkAuthFile: processZkAuth().file, tlsDir: adminTlsDir(), host: 'hv-a', mounts: [a.mountPoint], nbdDirs: [], timeoutMs: 7000, logFile: log, rateBytesPerSec: 50e6 }, 'host, mount, rate, log the credentials file and the certificate dir kept; timeout-ms replaced')
  t.equal(fs.readFileSync(conf, 'utf8'), written.replace('timeout-ms = 6000', 'timeout-ms = 7000'), 'hook.conf: only that line changed')

  const noFlags = await install()
  t.equal(noFlags.code, 0, noFlags.stderr)
  t.match(noFlags.stdout, new RegExp(`kept ${conf.replace(/[.]/g, '\\.')}: zk ${zk}, host hv-a, mounts ${a.mountPoint}`), 'with no flag: kept as it is')

  // Problems are named, each with what to do; the hook is installed all the same.
  const wrong = await install('--host', 'hv-nobody', '--mount', path.join(dir, 'not-a-mount'))
  t.equal(wrong.code, 0, 'installed anyway (the hook never fails libvirt)')
  t.match(wrong.stderr, /warning: mount \S+not-a-mount is not a UKAI mount now: start the agent/)
  t.match(wrong.stderr, /warning: no agent named 'hv-nobody' is registered in ZooKeeper/)

  // An unreachable ZooKeeper in the file is kept (UKAI_ZK in the environment does not replace
  // the file's setting; --zk would) and reported.
  fs.writeFileSync(conf, fs.readFileSync(conf, 'utf8').replace(/^zk = .*$/m, 'zk = 127.0.0.1:9'))
  const noZk = await install()
  t.equal(noZk.code, 0, noZk.stderr)
  t.match(noZk.stderr, /warning: ZooKeeper 127\.0\.0\.1:9 is not reachable .*fix 'zk =' in/)
  t.match(fs.readFileSync(conf, 'utf8'), /^zk = 127\.0\.0\.1:9$/m, 'the file\'s zk is kept')
  const fixed = await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf, '--zk', zk, '--host', 'hv-a', '--mount', a.mountPoint], { zk })
  t.equal(fixed.code, 0, fixed.stderr)
  t.equal(fixed.stderr, '', '--zk replaces it, and the check passes')
})

t.test('dev down stops a node restarted with the command the demo printed', { skip: fuseUnavailable() ?? false }, async (t) => {
  const dir = makeTempDir(t, 'devdown')
  t.teardown(async () => { await runCli(['dev', 'down', '--dir', dir], { timeoutMs: 60_000 }).catch(() => {}) })
  const up = await runCli(['dev', 'up', '--dir', dir, '--sites', '1', '--nodes-per-site', '2', '--detach'], { timeoutMs: 90_000 })
  t.equal(up.code, 0, up.stderr)
  const info = readCluster(dir)
  if (info === null) { t.fail('no cluster.json'); return }
  const victim = info.nodes[0]

  // What the demo does and prints: kill -9 the node, "restart it with: node dist/src/cli/main.js …".
  process.kill(victim.pid, 'SIGKILL')
  for (let i = 0; i < 100 && isAlive(victim.pid); i++) await sleep(50)
  const args = victim.argv.slice(2).map((a, i, all) => all[i - 1] === '--listen' ? victim.address : a)
  const out = fs.openSync(path.join(dir, 'restarted.log'), 'a')
  const child = spawn(process.execPath, [cliMainPath(), ...args], { env: daemonEnv(), detached: true, stdio: ['ignore', out, out] })
  child.unref()
  fs.closeSync(out)
  const pid = child.pid ?? 0
  t.teardown(() => { if (isAlive(pid)) process.kill(pid, 'SIGKILL') })
  const pidFile = path.join(victim.dataDir, 'storagenode.pid')
  for (let i = 0; i < 200 && !(fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() === String(pid)); i++) await sleep(50)
  t.equal(fs.readFileSync(pidFile, 'utf8').trim(), String(pid), 'the restarted node wrote its pid file')

  const down = await runCli(['dev', 'down', '--dir', dir], { timeoutMs: 60_000 })
  t.equal(down.code, 0, down.stderr)
  t.match(down.stdout, new RegExp(`node ${victim.id} \\(restarted\\) \\(pid ${pid}\\): exited`), 'dev down names the restarted node')
  t.notOk(isAlive(pid), 'and it is stopped')
  t.notOk(fs.existsSync(pidFile), 'it removed its pid file on the way out')
  for (const n of info.nodes.slice(1)) t.notOk(isAlive(n.pid), `node ${n.id} stopped`)
})
