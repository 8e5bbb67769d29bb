// src/dev (processes, pids, mounts, cluster) and test/helpers/cluster.ts against a stand-in
// daemon (test/helpers/fake-cli.js) that honours the daemon contract: a real TCP listener for
// storagenode, a real FUSE mount for mount. Independent of the real ukai commands.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { devDown, devUp, readCluster } from '../src/dev/cluster'
import { isMounted, mountsUnder } from '../src/lib/mounts'
import { isAlive, isOurs, readCmdline, stopProcess } from '../src/dev/pids'
import { spawnLogged, startStorageNode, waitForReadyLine } from '../src/dev/processes'
import { fuseUnavailable, makeTempDir, startAgent, startCluster, startNode, startZk } from './helpers/cluster'

const FAKE_CLI = path.join(__dirname, 'helpers', 'fake-cli.js')
process.env.UKAI_CLI_MAIN = FAKE_CLI
const noFuse = fuseUnavailable()

t.test('pids: cmdline identity protects against PID reuse', async (t) => {
  const argv = [process.execPath, '-e', 'setTimeout(() => {}, 60000)', 'ukai-pid-test']
  const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore' })
  t.teardown(() => { child.kill('SIGKILL') })
  const pid = child.pid as number
  t.same(readCmdline(pid)?.slice(1), argv.slice(1))
  t.ok(isOurs(pid, argv))
  t.notOk(isOurs(pid, [...argv.slice(0, -1), 'someone-else']), 'different argv is not ours')
  t.equal(await stopProcess(pid, [argv[0], 'other'], {}), 'not-running', 'never signals a foreign command line')
  t.ok(isAlive(pid), 'still alive')
  t.equal(await stopProcess(pid, argv), 'exited')
  t.notOk(isAlive(pid))
})

t.test('pids: SIGKILL after the SIGTERM deadline', async (t) => {
  const argv = [process.execPath, '-e', "process.on('SIGTERM', () => {}); console.log('armed'); setInterval(() => {}, 1000)", 'ukai-term-test']
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => { child.kill('SIGKILL') })
  await new Promise((resolve) => child.stdout?.once('data', resolve)) // its SIGTERM handler is installed
  t.equal(await stopProcess(child.pid as number, argv, { termTimeoutMs: 500 }), 'killed')
})

t.test('processes: a daemon that exits early fails with its log tail', async (t) => {
  const dir = makeTempDir(t, 'fail')
  process.env.FAKE_CLI_FAIL = '1'
  t.teardown(() => { delete process.env.FAKE_CLI_FAIL })
  await t.rejects(startStorageNode({ dir, id: 'x1', site: 'site-x', zk: '127.0.0.1:1' }),
    { code: 'UNAVAILABLE', message: /storage node x1 did not become ready: exited with code 3[\s\S]*failing on purpose/ })
})

t.test('processes: not ready in time → stopped, error with log tail', async (t) => {
  const dir = makeTempDir(t, 'slow')
  const logFile = path.join(dir, 'slow.log')
  const proc = spawnLogged({ argv: ['/bin/sh', '-c', 'echo \'{"msg":"starting"}\'; while :; do sleep 0.1; done'], logFile })
  await t.rejects(waitForReadyLine(proc, 'slow daemon', { timeoutMs: 2_000 }), { message: /not ready after 2000 ms[\s\S]*starting/ })
  t.notOk(isAlive(proc.pid), 'stopped after the timeout')
})

t.test('processes: detached children outlive nothing they should not, readiness from the log file', async (t) => {
  const dir = makeTempDir(t, 'detached')
  const node = await startStorageNode({ dir, id: 'd1', site: 'site-d', zk: '127.0.0.1:1', detached: true })
  t.teardown(() => node.stop())
  t.match(node.address, /^127\.0\.0\.1:\d+$/)
  const sid = fs.readFileSync(`/proc/${node.pid}/stat`, 'utf8').split(') ')[1].split(' ')[3]
  t.equal(Number(sid), node.pid, 'own session (setsid), so it survives our terminal')
  t.equal(await node.stop(), 'exited')
})

t.test('fixtures: zk, node kill/restart, agent with a real FUSE mount', { skip: noFuse ?? false }, async (t) => {
  const zk = await startZk(t)
  const node = await startNode(t, { zk, id: 'a1', site: 'site-a', capacity: '1GiB' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  t.ok(isMounted(agent.mountPoint), 'agent mounted')
  t.ok(agent.mountPoint.startsWith(path.join(require('node:os').tmpdir(), 'ukai-test-')))

  const { address, pid } = node
  await node.kill('SIGKILL')
  t.notOk(isAlive(pid))
  await node.restart()
  t.not(node.pid, pid, 'new process')
  t.equal(node.address, address, 'same address after restart')

  const agentPid = agent.pid
  await agent.kill('SIGKILL')
  t.ok(isMounted(agent.mountPoint), 'a killed agent leaves a dead mount')
  await agent.restart()
  t.not(agent.pid, agentPid)
  t.ok(isMounted(agent.mountPoint), 'mounted again')
  t.same(fs.readdirSync(agent.mountPoint), [])

  const zkPid = zk.pid
  await zk.restart()
  t.not(zk.pid, zkPid)
  t.notOk(isAlive(zkPid))
})

// tap runs teardowns last-registered first and drops the rest when one throws; this stand-in
// does the same so that a test body that throws half-way can be observed from outside.
class TeardownRecorder {
  private fns: Array<() => unknown> = []
  comments: string[] = []
  teardown (fn: () => unknown): void { this.fns.push(fn) }
  comment (...args: unknown[]): void { this.comments.push(args.join(' ')) }
  async runTeardowns (): Promise<void> {
    for (let fn = this.fns.pop(); fn !== undefined; fn = this.fns.pop()) await fn()
  }
}

t.test('fixtures: teardown cleans up after a test that threw', { skip: noFuse ?? false }, async (t) => {
  const tt = new TeardownRecorder()
  let leftovers: { dirs: string[], pids: number[], mounts: string[] } = { dirs: [], pids: [], mounts: [] }
  const body = async (): Promise<void> => {
    const c = await startCluster(tt, { sites: 2, nodesPerSite: 1 })
    leftovers = {
      dirs: [c.zk.dir, ...c.nodes.map((n) => n.dir), ...c.agents.map((a) => a.dir)],
      pids: [c.zk.pid, ...c.nodes.map((n) => n.pid), ...c.agents.map((a) => a.pid)],
      mounts: c.agents.map((a) => a.mountPoint)
    }
    t.same(c.nodes.map((n) => n.id), ['a1', 'b1'])
    await c.agent('site-b').kill('SIGKILL') // leaves a dead mount behind
    await c.node('a1').kill('SIGSTOP')      // a stopped process must still be stoppable
    throw new Error('failing on purpose')
  }
  await t.rejects(body(), /failing on purpose/)
  await tt.runTeardowns()
  t.same(tt.comments, [], 'no teardown failed')
  t.equal(leftovers.pids.length, 5)
  for (const pid of leftovers.pids) t.notOk(isAlive(pid), `pid ${pid} stopped`)
  for (const m of leftovers.mounts) t.notOk(isMounted(m), `${m} unmounted`)
  for (const d of leftovers.dirs) t.notOk(fs.existsSync(d), `${d} removed`)
})

t.test('devUp / devDown (attached)', { skip: noFuse ?? false }, async (t) => {
  const dir = makeTempDir(t, 'devup')
  t.teardown(async () => { await devDown({ dir }) })
  const info = await devUp({ dir, sites: 2, nodesPerSite: 2 })
  t.same(info.nodes.map((n) => `${n.id}@${n.site}`), ['a1@site-a', 'a2@site-a', 'b1@site-b', 'b2@site-b'])
  t.same(info.agents.map((a) => `${a.host}@${a.site}`), ['hv-a@site-a', 'hv-b@site-b'])
  t.same(info.agents.map((a) => a.mountPoint), [path.join(dir, 'mnt', 'site-a'), path.join(dir, 'mnt', 'site-b')])
  for (const a of info.agents) t.ok(isMounted(a.mountPoint))
  t.same(readCluster(dir), info)
  await t.rejects(devUp({ dir }), { code: 'ALREADY_EXISTS', message: /already running/ })

  const pids = [info.zk.pid, ...info.nodes.map((n) => n.pid), ...info.agents.map((a) => a.pid)]
  const down = await devDown({ dir })
  t.equal(down.stopped.length, 7)
  for (const pid of pids) t.notOk(isAlive(pid))
  t.same(mountsUnder(dir), [])
  t.notOk(fs.existsSync(path.join(dir, 'cluster.json')))
  t.same(await devDown({ dir }), { found: false, stopped: [], unmounted: [] }, 'twice is fine')
})

t.test('devUp --detach: children outlive their parent; devDown from another process', { skip: noFuse ?? false }, async (t) => {
  const dir = makeTempDir(t, 'detach')
  t.teardown(async () => { await devDown({ dir }) })
  // Run devUp in a separate node process that exits right after.
  const script = `
    process.env.UKAI_CLI_MAIN = ${JSON.stringify(FAKE_CLI)}
    require(${JSON.stringify(path.join(__dirname, '..', 'src', 'dev', 'cluster'))}).devUp({ dir: ${JSON.stringify(dir)}, sites: 1, nodesPerSite: 2, detach: true })
      .then(() => process.exit(0), (err) => { console.error(err); process.exit(1) })`
  const code = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, '-e', script], { stdio: ['ignore', 'inherit', 'inherit'] })
    child.on('exit', resolve)
  })
  t.equal(code, 0, 'dev up --detach returned')
  const info = readCluster(dir)
  if (info === null) throw new Error('no cluster.json')
  for (const p of [info.zk, ...info.nodes, ...info.agents]) t.ok(isOurs(p.pid, p.argv), `pid ${p.pid} outlived the parent`)
  t.ok(isMounted(info.agents[0].mountPoint))

  // An agent that died without unmounting: devDown still unmounts.
  process.kill(info.agents[0].pid, 'SIGKILL')
  const down = await devDown({ dir })
  t.same(down.unmounted, [info.agents[0].mountPoint])
  for (const p of [info.zk, ...info.nodes, ...info.agents]) t.notOk(isAlive(p.pid))
  t.same(mountsUnder(dir), [])
})

t.test('devUp: a stale cluster.json (dead pids) is replaced', { skip: noFuse ?? false }, async (t) => {
  const dir = makeTempDir(t, 'stale')
  t.teardown(async () => { await devDown({ dir }) })
  const stale = { version: 1, dir, detached: true, startedAt: '', zk: { connectString: '', pid: 999999, argv: ['x'], dir: '', logFile: '' }, nodes: [], agents: [] }
  fs.writeFileSync(path.join(dir, 'cluster.json'), JSON.stringify(stale))
  const info = await devUp({ dir, sites: 1, nodesPerSite: 1, agents: false })
  t.equal(info.nodes.length, 1)
  await devDown({ dir })
})
