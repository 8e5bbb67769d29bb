// Kill -9 the controller leader mid-repair: a node came back, the leader started repairing an
// unleased disk's stale replicas (and runs that repair itself, lease-free); the standby leads
// within seconds and finishes it. Then the in-sync node is killed and every byte is read back
// from the repaired replica.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startCluster, startController } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { staleBlocks: number, belowReplicaBlocks: number, leaseHolder: string | null, replicasPerNode: Record<string, { state: string }> }
interface Status { state: string, reason: string, executor: string, progress: { bytes: number }, plan: { bytes: number } }
interface ControllerState { leader: { host: string } | null }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 200)

t.test('a standby finishes the repair its leader was killed in', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: [...SESSION, '--no-controller'] })
  // A slow repair (2 MB/s), so that there is a middle to kill the leader in.
  const ctl = ['--repair-rate', '2', ...SESSION]
  const c1 = await startController(t, { zk, host: 'ctl-1', extraArgs: ctl })
  const c2 = await startController(t, { zk, host: 'ctl-2', extraArgs: ctl })
  t.teardown(() => { if (!t.passing()) for (const x of [c1, c2]) t.comment(`${x.host}:\n${fs.readFileSync(x.logFile, 'utf8').split('\n').slice(-30).join('\n')}`) })
  const leader = async (): Promise<string | undefined> => (await cliJson<ControllerState>(['controller', 'status'], zk)).leader?.host
  await until('ctl-1 to lead', async () => await leader() === 'ctl-1' ? true : undefined)

  t.equal((await runCli(['disk', 'create', 'rep', '--size', '16M', '--block-size', '1M', '--nodes', 'a1,a2'], { zk })).code, 0)
  const file = path.join(a.mountPoint, 'rep')
  fs.writeFileSync(file, randomBytes(rng(1), 16 * MiB), { flag: 'r+' })
  // a2 misses a rewrite of the whole disk; closed again: nobody holds the lease.
  await c.node('a2').kill('SIGKILL')
  const model = randomBytes(rng(2), 16 * MiB)
  fs.writeFileSync(file, model, { flag: 'r+' })
  const before = await cliJson<Info>(['disk', 'info', 'rep'], zk)
  t.equal(before.staleBlocks, 16, 'a2 is stale for every block')
  await until('the lease to be free', async () => (await cliJson<Info>(['disk', 'info', 'rep'], zk)).leaseHolder === null ? true : undefined)

  await c.node('a2').restart()
  const status = async (): Promise<Status | undefined> => (await cliJson<Status[]>(['relocate', 'status', 'rep'], zk))[0]
  const mid = await until('ctl-1 to repair', async () => { const s = await status(); return s?.executor === 'ctl-1' && s.progress.bytes >= 3 * MiB ? s : undefined })
  t.ok(mid.state === 'copying' && mid.progress.bytes < 16 * MiB, `the leader repairs by itself (${mid.progress.bytes} bytes copied)`)
  await c1.kill('SIGKILL')
  const killedAt = Date.now()
  await until('ctl-2 to lead', async () => await leader() === 'ctl-2' ? true : undefined)
  t.comment(`ctl-2 leads ${Date.now() - killedAt} ms after ctl-1 was killed`)
  const executors = new Set<string>()
  const end = await until('the repair to finish', async () => { const s = await status(); if (s === undefined) return undefined; executors.add(s.executor); return s.state === 'done' || s.state === 'paused' ? s : undefined }, 90_000)
  t.equal(end.state, 'done', `repaired (${end.reason})`)
  t.ok(executors.has('ctl-2'), `the standby finished it (executors: ${[...executors].join(',')})`)
  t.equal(fs.readFileSync(c2.logFile, 'utf8').split('\n').filter(l => l.includes('automatic repair started')).length, 0, 'the standby did not plan a second repair: it resumed the recorded one')
  const after = await cliJson<Info>(['disk', 'info', 'rep'], zk)
  t.equal(after.staleBlocks, 0, 'no stale replica left')
  t.equal(after.belowReplicaBlocks, 0, 'every block has its two replicas again')

  await c.node('a1').kill('SIGKILL')
  t.equal(sha256(fs.readFileSync(file)), sha256(model), 'every byte verifies from a2 alone')
})
