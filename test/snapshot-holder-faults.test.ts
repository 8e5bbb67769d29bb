// The lease holder fails during a snapshot commit. A holder that does not answer (SIGSTOP) within
// the CLI's timeout: the CLI reports that nothing was committed, and that stays true when the
// holder wakes up (its late commit must fail). A holder that dies (SIGKILL): its lease goes with
// its ZooKeeper session and the CLI commits under its own lease, with what was acknowledged.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startAgent, startCluster } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { randomWrites, rng, sha256 } from './helpers/model'
import { until as untilTrue } from './helpers/until'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 4 * MiB
const SESSION = ['--zk-session-timeout-ms', '2000']

// A process that keeps the disk open for write on the mount (so the agent holds the lease)
// without the test process holding a descriptor on it (a stopped mount would hang our forks).
function holdOpen (file: string): ChildProcess {
  return spawn('sh', ['-c', `exec 3<>"$1"; exec sleep 600`, 'sh', file], { stdio: 'ignore' })
}

async function leaseHolder (zk: string, disk: string): Promise<string | null> {
  return (await cliJson<{ leaseHolder: string | null }>(['disk', 'info', disk], zk)).leaseHolder
}

const until = async (what: string, fn: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => await untilTrue(what, fn, timeoutMs, 100)

t.test('snapshot commit when the lease holder fails', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const rand = rng(Date.now() >>> 0)

  t.test('a holder that does not answer: nothing committed, also after it wakes', async (t) => {
    const a = await startAgent(t, { zk, host: 'hv-slow', site: 'site-a', extraArgs: ['--zk-session-timeout-ms', '20000'] })
    await cliOk(t, ['disk', 'create', 'slow', '--size', '4M', '--block-size', '1M'], zk)
    const file = path.join(a.mountPoint, 'slow')
    const holder = holdOpen(file)
    t.teardown(() => { holder.kill('SIGKILL') })
    await until('the agent holds the lease', async () => await leaseHolder(zk, 'slow') === 'hv-slow')
    process.kill(a.pid, 'SIGSTOP')
    let r
    try {
      r = await runCli(['snapshot', 'create', 'slow@late', '--timeout-ms', '2000'], { zk })
    } finally {
      process.kill(a.pid, 'SIGCONT')
    }
    t.equal(r.code, 1)
    t.match(r.stderr, /hv-slow holds the lease of 'slow' but did not commit the snapshot within 2000 ms; nothing was committed/)
    await new Promise(resolve => setTimeout(resolve, 2000))  // the woken holder sees the request (gone)
    t.same(await cliJson<unknown[]>(['snapshot', 'list', 'slow'], zk), [], 'no snapshot appeared late')
    await cliOk(t, ['snapshot', 'create', 'slow@ontime'], zk)
    t.same((await cliJson<Array<{ name: string }>>(['snapshot', 'list', 'slow'], zk)).map(s => s.name), ['ontime'], 'the awake holder commits')
    holder.kill('SIGKILL')
  })

  t.test('a holder that died: the CLI commits after its session expired', async (t) => {
    const a = await startAgent(t, { zk, host: 'hv-dies', site: 'site-a', extraArgs: SESSION })
    await cliOk(t, ['disk', 'create', 'dies', '--size', '4M', '--block-size', '1M'], zk)
    const file = path.join(a.mountPoint, 'dies')
    const model = Buffer.alloc(SIZE)
    const fh = await fs.promises.open(file, 'r+')
    for (const w of randomWrites(model, rand, 20, 200 * KiB)) await fh.write(w.data, 0, w.data.length, w.off)
    await fh.close()
    const holder = holdOpen(file)
    t.teardown(() => { holder.kill('SIGKILL') })
    await until('the agent holds the lease', async () => await leaseHolder(zk, 'dies') === 'hv-dies')
    await a.kill('SIGKILL')
    const started = Date.now()
    const r = await runCli(['snapshot', 'create', 'dies@after'], { zk })
    t.equal(r.code, 0, r.stderr)
    t.comment(`committed ${Date.now() - started} ms after the holder died (session timeout 2000 ms)`)
    holder.kill('SIGKILL')
    const b = await startAgent(t, { zk, host: 'hv-next', site: 'site-a' })
    t.equal(sha256(await fs.promises.readFile(path.join(b.mountPoint, '.snapshots', 'dies@after'))), sha256(model), 'the snapshot holds every acknowledged write')
  })
})
