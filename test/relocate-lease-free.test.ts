// An orphaned relocation (nobody holds the disk's lease) runs in the CLI without the lease and
// without opening the disk (src/relocate/run-here.ts, docs/architecture.md "An orphaned
// relocation runs without the lease"). A VM that starts writing mid-copy takes the lease at once
// (no hand-over to wait for), which fences the lease-free run; its agent finishes the relocation,
// and no write is lost — the writer's included.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { blocksPerSite: Record<string, number>, leaseHolder: string | null }
interface Status { state: string, reason: string, executor: string, progress: { bytes: number }, plan: { bytes: number } }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 200)

t.test('lease-free orphaned relocation, and a writer that appears mid-copy', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: SESSION })
  const b = await startAgent(t, { zk, host: 'hv-b', site: 'site-b', extraArgs: SESSION })
  const status = async (): Promise<Status> => (await cliJson<Status[]>(['relocate', 'status', 'vm6'], zk))[0]
  const sizeBytes = 24 * MiB
  t.equal((await runCli(['disk', 'create', 'vm6', '--size', '24M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
  const model = randomBytes(rng(6), sizeBytes)
  fs.writeFileSync(path.join(a.mountPoint, 'vm6'), model, { flag: 'r+' })  // closed again: the lease is let go
  await until('the lease to be free', async () => (await cliJson<Info>(['disk', 'info', 'vm6'], zk)).leaseHolder === null ? true : undefined)

  const run = runCli(['relocate', 'vm6', '--to', 'site-b', '--rate', '4', '--wait'], { zk, timeoutMs: 120_000 })
  const mid = await until('the CLI to copy', async () => { const s = await status(); return s?.executor.startsWith('cli-') && s.progress.bytes > 2 * MiB ? s : undefined })
  t.ok(mid.progress.bytes < mid.plan.bytes, `the CLI runs it (${mid.executor})`)
  t.equal((await cliJson<Info>(['disk', 'info', 'vm6'], zk)).leaseHolder, null, 'without holding the lease')

  // A VM on site B starts writing, all over the disk, while the CLI copies.
  const fb = await fs.promises.open(path.join(b.mountPoint, 'vm6'), 'r+')
  t.teardown(() => fb.close().catch(() => {}))
  const rand = rng(66)
  const t0 = Date.now()
  let writes = 0
  for (let i = 0; i < 40; i++) {
    const len = 4096 * (1 + Math.floor(rand() * 64))
    const off = Math.floor(rand() * (sizeBytes - len) / 4096) * 4096
    const data = randomBytes(rand, len)
    await fb.write(data, 0, len, off)
    data.copy(model, off)
    writes++
  }
  t.comment(`${writes} writes in ${Date.now() - t0} ms after the VM appeared`)
  t.equal((await cliJson<Info>(['disk', 'info', 'vm6'], zk)).leaseHolder, 'hv-b', 'the writer took the lease')
  const executors = new Set<string>()
  const end = await until('the relocation to finish', async () => {
    const s = await status()
    if (s.executor !== '') executors.add(s.executor)
    return s.state === 'done' || s.state === 'paused' ? s : undefined
  }, 90_000)
  t.equal(end.state, 'done', `done (${end.reason})`)
  t.ok(executors.has('hv-b'), `the writer's agent ran it after the take-over (executors seen: ${[...executors].join(', ')})`)
  const res = await run
  t.equal(res.code, 0, 'the waiting CLI saw it finish')
  t.same((await cliJson<Info>(['disk', 'info', 'vm6'], zk)).blocksPerSite, { 'site-b': 24 }, 'the map holds only site-B replicas')
  const got = Buffer.alloc(sizeBytes)
  await fb.read(got, 0, got.length, 0)
  t.equal(sha256(got), sha256(model), 'every byte verifies on site B, the racing writes included')
  t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'vm6'))), sha256(model), 'and on site A')
})
