// Automatic repair (src/controller/repair-duty.ts): a storage node killed under writes and
// restarted gets the replicas it missed copied again, with no operator command — a leased disk's
// by its lease holder, an unleased one's by the controller itself (lease-free). Only the stale
// blocks move. Then the other replica's node is killed and every byte is read back from the
// repaired one.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const DISK_BYTES = 16 * MiB
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { staleBlocks: number, belowReplicaBlocks: number, leaseHolder: string | null, replicasPerNode: Record<string, { state: string }> }
interface Status { state: string, reason: string, executor: string, progress: { bytes: number } }
interface ControllerState { leader: { host: string, kind: string, duties: Array<{ name: string, state: string, detail?: any }> } | null }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 300)

t.test('a node back after an outage: its stale replicas are repaired without an operator', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 3, agents: false })
  const zk = c.zk.connectString
  // The agent is the only controller candidate (agents stand by default).
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: SESSION })
  t.teardown(() => { if (!t.passing()) t.comment(`hv-a:\n${fs.readFileSync(a.logFile, 'utf8').split('\n').filter(l => /controller|repair|relocation/.test(l)).slice(-40).join('\n')}`) })
  const ctl = await until('the agent to lead the controller', async () => { const s = await cliJson<ControllerState>(['controller', 'status'], zk); return s.leader?.host === 'hv-a' ? s : undefined })
  t.equal(ctl.leader?.kind, 'agent', 'an agent leads')

  const models = new Map<string, Buffer>()
  const fds = new Map<string, fs.promises.FileHandle>()
  for (const [i, name] of ['held', 'idle'].entries()) {
    t.equal((await runCli(['disk', 'create', name, '--size', '16M', '--block-size', '1M', '--nodes', 'a1,a2'], { zk })).code, 0)
    const fd = await fs.promises.open(path.join(a.mountPoint, name), 'r+')
    t.teardown(() => fd.close().catch(() => {}))
    const model = randomBytes(rng(20 + i), DISK_BYTES)
    await fd.write(model, 0, model.length, 0)
    await fd.sync()
    models.set(name, model)
    fds.set(name, fd)
  }

  // a2 dies; writes go on (a2's replicas of the blocks written are marked stale).
  await c.node('a2').kill('SIGKILL')
  const rand = rng(7)
  for (const [name, fd] of fds) {
    const model = models.get(name) as Buffer
    for (let i = 0; i < 12; i++) {
      const len = 4096 * (1 + Math.floor(rand() * 32))
      const off = Math.floor(rand() * (DISK_BYTES - len) / 4096) * 4096
      const data = crypto.randomBytes(len)
      await fd.write(data, 0, len, off)
      data.copy(model, off)
    }
    await fd.sync()
  }
  await (fds.get('idle') as fs.promises.FileHandle).close()  // 'idle' has no lease holder from now on
  const staleBefore = new Map<string, number>()
  for (const name of models.keys()) {
    const info = await cliJson<Info>(['disk', 'info', name], zk)
    t.ok(info.staleBlocks > 0 && info.staleBlocks < 16, `${name}: ${info.staleBlocks} blocks stale on a2, not all`)
    staleBefore.set(name, info.staleBlocks)
  }
  await until('idle to have no lease', async () => (await cliJson<Info>(['disk', 'info', 'idle'], zk)).leaseHolder === null ? true : undefined)

  // a2 comes back. Nobody runs a command.
  await c.node('a2').restart()
  const restartedAt = Date.now()
  for (const name of models.keys()) {
    const info = await until(`${name} to be repaired`, async () => {
      const i = await cliJson<Info>(['disk', 'info', name], zk)
      return i.staleBlocks === 0 && i.belowReplicaBlocks === 0 ? i : undefined
    }, 90_000)
    t.same(Object.keys(info.replicasPerNode).sort(), ['a1', 'a2'], `${name}: still on a1 and a2`)
    const rec = (await cliJson<Status[]>(['relocate', 'status', name], zk))[0]
    t.equal(rec.state, 'done', `${name}: the repair finished (${rec.reason})`)
    const stale = staleBefore.get(name) as number
    t.ok(rec.progress.bytes > 0 && rec.progress.bytes <= stale * MiB, `${name}: only the stale blocks were copied (${rec.progress.bytes} bytes for ${stale} stale 1 MiB blocks)`)
  }
  t.comment(`both disks repaired ${Date.now() - restartedAt} ms after a2 restarted`)
  const log = fs.readFileSync(a.logFile, 'utf8')
  t.equal(log.split('\n').filter(l => l.includes('automatic repair started')).length, 2, 'the controller started one repair per disk')
  t.match(log, /"disk":"idle".*nobody runs this relocation/, 'the unleased disk\'s repair ran in the controller, lease-free')
  t.notMatch(log, /"disk":"held".*nobody runs this relocation/, 'the leased disk\'s ran under its lease')

  // Every byte from the repaired replica alone.
  await c.node('a1').kill('SIGKILL')
  const held = fds.get('held') as fs.promises.FileHandle
  const got = Buffer.alloc(DISK_BYTES)
  await held.read(got, 0, got.length, 0)
  t.equal(sha256(got), sha256(models.get('held') as Buffer), 'held: every byte verifies from a2')
  t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'idle'))), sha256(models.get('idle') as Buffer), 'idle: every byte verifies from a2')
})
