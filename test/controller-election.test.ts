// The controller (src/controller, docs/architecture.md "The controller"): two standalone
// candidates; the leader runs relocations nobody else runs. Kill -9 the CLI that ran an unleased
// relocation: the leader picks it up; kill -9 the leader mid-copy: the standby leads within
// seconds and finishes it. A corrupt relocation record is refused with a logged reason,
// once, and the controller keeps working. Data verified byte for byte through a mount.
import { processZkAuth } from '../src/dev/process-zk-auth'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { MetaStore, zkOf } from '../src/meta/store'
import { paths } from '../src/meta/schema'
import { fuseUnavailable, startAgent, startCluster, startController } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { blocksPerSite: Record<string, number>, leaseHolder: string | null, belowReplicaBlocks: number }
interface Status { state: string, reason: string, executor: string, progress: { bytes: number }, plan: { bytes: number } }
interface ControllerState { leader: { host: string, kind: string, leaderSinceMs: number, duties: Array<{ name: string, state: string, detail?: any }> } | null, candidates: Array<{ host: string, kind: string }> }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 200)

t.test('a standby controller takes over and finishes what the leader and a CLI left', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  // The writer's agent does not stand: the two daemons are the only candidates.
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: [...SESSION, '--no-controller'] })
  const c1 = await startController(t, { zk, host: 'ctl-1', extraArgs: SESSION })
  const c2 = await startController(t, { zk, host: 'ctl-2', extraArgs: SESSION })
  // On a failure, what the controllers said (their temp dirs go with the teardown).
  t.teardown(() => { if (!t.passing()) for (const x of [c1, c2]) t.comment(`${x.host}:\n${fs.readFileSync(x.logFile, 'utf8').split('\n').slice(-40).join('\n')}`) })
  const state = async (): Promise<ControllerState> => await cliJson<ControllerState>(['controller', 'status'], zk)
  const first = await until('ctl-1 to lead', async () => { const s = await state(); return s.leader?.host === 'ctl-1' && s.leader.duties.length === 4 ? s : undefined })
  t.same(first.candidates.map(x => x.host), ['ctl-1', 'ctl-2'], 'ctl-2 stands by')
  t.same(first.leader?.duties.map(d => d.name), ['orphaned-relocations', 'automatic-repair', 'node-lifecycle', 'scrub-findings'], 'the leader runs every duty')
  const text = await runCli(['controller', 'status'], { zk })
  t.match(text.stdout, /controller leader: ctl-1 \(daemon, pid \d+\)/, 'status says who leads')
  t.ok(fs.existsSync(c1.pidFile) && Number(fs.readFileSync(c1.pidFile, 'utf8')) === c1.pid, 'the daemon wrote its pid file')

  // A corrupt record: refused with a reason, once, and nothing else stops.
  t.equal((await runCli(['disk', 'create', 'bad', '--size', '4M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  await zkOf(meta).create(paths.relocation('bad'), Buffer.from(JSON.stringify({ v: 1, id: 'x', disk: 'bad', state: 'copying', targetNodes: 'a1' })))

  const sizeBytes = 32 * MiB
  t.equal((await runCli(['disk', 'create', 'vm1', '--size', '32M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
  const model = randomBytes(rng(10), sizeBytes)
  fs.writeFileSync(path.join(a.mountPoint, 'vm1'), model, { flag: 'r+' })  // closed again: no lease
  await until('the lease to be free', async () => (await cliJson<Info>(['disk', 'info', 'vm1'], zk)).leaseHolder === null ? true : undefined)
  const status = async (): Promise<Status> => (await cliJson<Status[]>(['relocate', 'status', 'vm1'], zk))[0]

  // 1. A CLI runs the unleased relocation (`relocate` runs it in the foreground when nobody holds
  // the lease) and is killed -9 mid-copy.
  const cli = spawn(process.execPath, [cliMainPath(), 'relocate', 'vm1', '--to', 'site-b', '--rate', '3', '--no-probe', '--wait'], { env: { ...daemonEnv(), UKAI_ZK: zk }, stdio: 'ignore' })
  const cliExited = new Promise(resolve => cli.on('exit', resolve))
  t.teardown(() => { if (cli.exitCode === null) cli.kill('SIGKILL') })
  const byCli = await until('the CLI to copy vm1', async () => { const s = await status(); return s?.executor.startsWith('cli-') && s.progress.bytes > 2 * MiB ? s : undefined })
  cli.kill('SIGKILL')
  await cliExited
  t.ok(byCli.progress.bytes < byCli.plan.bytes, `the CLI was killed at ${byCli.progress.bytes} of ${byCli.plan.bytes} bytes`)

  // 2. The leader picks it up once the CLI's session is gone, and is killed -9 mid-copy in turn.
  const byLeader = await until('ctl-1 to copy vm1', async () => { const s = await status(); return s.executor === 'ctl-1' && s.progress.bytes > byCli.progress.bytes + 2 * MiB ? s : undefined })
  t.ok(byLeader.state === 'copying' && byLeader.progress.bytes < byLeader.plan.bytes, 'the leader runs the orphaned relocation')
  await c1.kill('SIGKILL')
  const killedAt = Date.now()
  const second = await until('ctl-2 to lead', async () => { const s = await state(); return s.leader?.host === 'ctl-2' ? s : undefined })
  const takeoverMs = Date.now() - killedAt
  t.comment(`ctl-2 leads ${takeoverMs} ms after ctl-1 was killed`)
  t.ok(takeoverMs < 10_000, 'within seconds (a 2 s session)')
  t.same(second.candidates.map(x => x.host), ['ctl-2'], 'the dead leader is no candidate any more')
  const executors = new Set<string>()
  const end = await until('vm1 to finish', async () => { const s = await status(); executors.add(s.executor); return s.state === 'done' || s.state === 'paused' ? s : undefined }, 90_000)
  t.equal(end.state, 'done', `vm1 relocated (${end.reason})`)
  t.ok(executors.has('ctl-2'), `the standby finished it (executors: ${[...executors].join(',')})`)
  t.same((await cliJson<Info>(['disk', 'info', 'vm1'], zk)).blocksPerSite, { 'site-b': 32 }, 'only site-B replicas')
  t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'vm1'))), sha256(model), 'every byte verifies')

  const refused = (f: string): number => fs.readFileSync(f, 'utf8').split('\n').filter(l => l.includes('relocation record refused') && l.includes('"disk":"bad"')).length
  t.equal(refused(c1.logFile), 1, 'ctl-1 logged the corrupt record once (not at every sweep)')
  t.equal(refused(c2.logFile), 1, 'and so did ctl-2 once it led')
  t.match(fs.readFileSync(c2.logFile, 'utf8'), /corrupt relocation record of disk 'bad' in ZooKeeper: targetNodes is not a list/, 'with the reason')
  const last = await state()
  t.match(last.leader?.duties.find(d => d.name === 'orphaned-relocations')?.detail?.refused, { bad: /targetNodes/ }, 'status shows the refusal')
  await zkOf(meta).remove(paths.relocation('bad'))

  // A clean stop leaves the election at once.
  await c2.stop()
  t.equal((await state()).leader, null, 'no leader after the last candidate stopped')
  t.notOk(fs.existsSync(c2.pidFile), 'the pid file is removed on a clean stop')
})
