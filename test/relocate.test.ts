// Relocation while the disk is in use: copy near, flip, drop far. A model-checked writer runs
// through the mount the whole time; crashes of the executing agent and of a target node are
// injected with SIGKILL.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { StorageClient } from '../src/storagenode/client'
import { startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const KiB = 1024
const MiB = 1024 * KiB
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { blocksPerSite: Record<string, number>, replicasPerNode: Record<string, { inSync: number, syncing: number, stale: number }>, uuid: string }
interface Status { disk: string, state: string, reason: string, executor: string, percent: number, progress: { bytes: number }, plan: { bytes: number } }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 300)

// Random writes through the mount into a model, until stopped; returns how many it made.
function startWriter (file: string, sizeBytes: number, model: Buffer, seed: number): { stop: () => Promise<number> } {
  const rand = rng(seed)
  let stopped = false
  const run = (async () => {
    const fh = await fs.promises.open(file, 'r+')
    let n = 0
    try {
      while (!stopped) {
        const len = 512 * (1 + Math.floor(rand() * 256))
        const off = Math.floor(rand() * (sizeBytes - len) / 512) * 512
        const data = randomBytes(rand, len)
        await fh.write(data, 0, len, off)
        data.copy(model, off)
        n++
      }
    } finally {
      await fh.close()
    }
    return n
  })()
  return { stop: async () => { stopped = true; return await run } }
}

t.test('relocation', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: SESSION })
  const b = await startAgent(t, { zk, host: 'hv-b', site: 'site-b', extraArgs: SESSION })
  const status = async (disk: string): Promise<Status> => (await cliJson<Status[]>(['relocate', 'status', disk], zk))[0]
  const blocksOn = async (nodeId: string, uuid: string): Promise<number> => {
    const client = new StorageClient({ nodeId, address: c.node(nodeId).address })
    try { return (await client.listBlocks({ diskUuid: uuid })).length } finally { client.close() }
  }

  t.test('bad requests are refused and change nothing', async (t) => {
    t.equal((await runCli(['disk', 'create', 'still', '--size', '8M', '--site', 'site-a'], { zk })).code, 0)
    const before = await cliJson<Info>(['disk', 'info', 'still'], zk)
    for (const [args, re] of [
      [['relocate', 'still', '--to', 'mars'], /unknown site 'mars'/],
      [['relocate', 'still', '--to', 'site-b', '--replicas', '3'], /site site-b has 2 live storage nodes; the disk needs 3/],
      [['relocate', 'still', '--to', 'site-a'], /already on a1, a2 \(site site-a\); nothing to do/],
      [['relocate', 'still', '--nodes', 'b1,zz'], /unknown storage node 'zz'/],
      [['relocate', 'nope', '--to', 'site-b'], /unknown disk 'nope'/],
      [['relocate', 'still'], /--to SITE or --nodes/]
    ] as Array<[string[], RegExp]>) {
      const res = await runCli(args, { zk })
      t.not(res.code, 0, `ukai ${args.join(' ')} fails`)
      t.match(res.stderr, re, `ukai ${args.join(' ')} says why`)
    }
    t.same(await cliJson<Info>(['disk', 'info', 'still'], zk), before, 'the disk is as it was')
    t.same(await cliJson<Status[]>(['relocate', 'status', 'still'], zk), [], 'no relocation was recorded')
    const dry = await runCli(['relocate', 'still', '--to', 'site-b', '--dry-run'], { zk })
    t.equal(dry.code, 0)
    t.match(dry.stdout, /site-a → site-b/)
    t.same(await cliJson<Info>(['disk', 'info', 'still'], zk), before, '--dry-run changes nothing')
  })

  t.test('the plan estimates the copy from a measured node-to-node rate; the probe stores nothing', async (t) => {
    interface Plan { bytes: number, writtenBlocks: number, estimate: { seconds: number | null, measuredBytesPerSec: number, rateCapBytesPerSec: number, sampledBlocks: number, basis: string } }
    t.equal((await runCli(['disk', 'create', 'est', '--size', '8M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    fs.writeFileSync(path.join(a.mountPoint, 'est'), Buffer.alloc(6 * MiB, 7), { flag: 'r+' })
    const { uuid } = await cliJson<Info>(['disk', 'info', 'est'], zk)
    const plan = await cliJson<Plan>(['relocate', 'est', '--to', 'site-b', '--dry-run'], zk)
    t.equal(plan.writtenBlocks, 6)
    t.equal(plan.estimate.basis, 'measured')
    t.ok(plan.estimate.sampledBlocks > 0 && plan.estimate.measuredBytesPerSec > 0, `measured ${plan.estimate.measuredBytesPerSec} B/s over ${plan.estimate.sampledBlocks} block(s)`)
    t.ok(Math.abs((plan.estimate.seconds ?? -1) - plan.bytes / plan.estimate.measuredBytesPerSec) < 1e-6, 'estimate = bytes to copy / measured rate')
    t.same([await blocksOn('b1', uuid), await blocksOn('b2', uuid)], [0, 0], 'the targets stored nothing while probing')
    const capped = await cliJson<Plan>(['relocate', 'est', '--to', 'site-b', '--dry-run', '--rate', '0.5'], zk)
    t.equal(capped.estimate.basis, 'measured, rate cap', 'a --rate below the measured rate bounds the estimate')
    t.ok(Math.abs((capped.estimate.seconds ?? -1) - capped.bytes / 500_000) < 1e-6)
    const table = await runCli(['relocate', 'est', '--to', 'site-b', '--dry-run'], { zk })
    t.match(table.stdout, /~\d+ s \(measured [\d.]+ MB\/s node to node\)/, 'the table shows the estimate and its basis')
    const blind = await runCli(['relocate', 'est', '--to', 'site-b', '--dry-run', '--no-probe'], { zk })
    t.match(blind.stdout, /unknown \(link not measured; pass --rate\)/, '--no-probe without --rate: no estimate, and says so')
  })

  t.test('A → B under a model-checked writer: every byte verifies, only site B holds the disk', async (t) => {
    const sizeBytes = 48 * MiB
    t.equal((await runCli(['disk', 'create', 'vm1', '--size', '48M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const model = Buffer.alloc(sizeBytes)
    const fileA = path.join(a.mountPoint, 'vm1')
    // Some data before the move, so there is something to copy.
    const pre = randomBytes(rng(1), 20 * MiB)
    fs.writeFileSync(fileA, pre, { flag: 'r+' })
    pre.copy(model, 0)
    const writer = startWriter(fileA, sizeBytes, model, 99)
    const res = await runCli(['relocate', 'vm1', '--to', 'site-b', '--rate', '40', '--wait'], { zk, timeoutMs: 120_000 })
    const writes = await writer.stop()
    t.equal(res.code, 0, res.stderr)
    t.match(res.stdout, /relocation of vm1: done/)
    t.ok(writes > 20, `${writes} writes raced the copy`)
    const info = await cliJson<Info>(['disk', 'info', 'vm1'], zk)
    t.same(info.blocksPerSite, { 'site-b': 48 }, 'the map holds only site-B replicas')
    t.same(Object.keys(info.replicasPerNode).sort(), ['b1', 'b2'])
    t.equal(await blocksOn('a1', info.uuid) + await blocksOn('a2', info.uuid), 0, "site A's nodes hold none of its blocks")
    t.equal(sha256(fs.readFileSync(path.join(b.mountPoint, 'vm1'))), sha256(model), 'every byte verifies (read on site B)')
    t.equal(sha256(fs.readFileSync(fileA)), sha256(model), 'and on site A')
    t.equal((await status('vm1')).state, 'done')
  })

  t.test('cancel mid-copy takes back the added replicas and keeps every byte', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm4', '--size', '24M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const data = randomBytes(rng(4), 24 * MiB)
    fs.writeFileSync(path.join(a.mountPoint, 'vm4'), data, { flag: 'r+' })
    const run = runCli(['relocate', 'vm4', '--to', 'site-b', '--rate', '4', '--wait'], { zk, timeoutMs: 120_000 })
    await until('copy progress', async () => { const s = await status('vm4'); return s !== undefined && s.progress.bytes > 2 * MiB ? s : undefined })
    const cancel = await runCli(['relocate', 'cancel', 'vm4'], { zk, timeoutMs: 60_000 })
    t.equal(cancel.code, 0, cancel.stderr)
    t.match(cancel.stdout, /cancelled/)
    t.equal((await run).code, 1, 'the waiting relocate reports it did not finish')
    const info = await cliJson<Info>(['disk', 'info', 'vm4'], zk)
    t.same(Object.keys(info.replicasPerNode).sort(), ['a1', 'a2'], 'only the original replicas remain')
    t.equal(info.replicasPerNode.a1.inSync, 24)
    t.equal(await blocksOn('b1', info.uuid) + await blocksOn('b2', info.uuid), 0, 'the targets hold none of its blocks')
    t.equal(sha256(fs.readFileSync(path.join(b.mountPoint, 'vm4'))), sha256(data), 'every byte verifies')
  })

  t.test('when the lease moves mid-copy, the relocation continues on the new holder', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm5', '--size', '24M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const model = randomBytes(rng(5), 24 * MiB)
    const fa = await fs.promises.open(path.join(a.mountPoint, 'vm5'), 'r+')
    t.teardown(() => fa.close().catch(() => {}))
    await fa.write(model, 0, model.length, 0) // hv-a holds the lease (while the file is open) and executes
    const start = await runCli(['relocate', 'vm5', '--to', 'site-b', '--rate', '5'], { zk })
    t.match(start.stdout, /started on hv-a/)
    await until('copy progress on hv-a', async () => { const s = await status('vm5'); return s.executor === 'hv-a' && s.progress.bytes > 2 * MiB ? s : undefined })
    // A VM on site B starts writing: the lease moves, and the relocation with it.
    const fb = await fs.promises.open(path.join(b.mountPoint, 'vm5'), 'r+')
    t.teardown(() => fb.close().catch(() => {}))
    const page = Buffer.alloc(4096, 0x5b)
    await fb.write(page, 0, 4096, 5 * MiB)
    page.copy(model, 5 * MiB)
    await until('hv-b to run it', async () => { const s = await status('vm5'); return s.executor === 'hv-b' || s.state === 'done' ? s : undefined })
    const end = await until('the relocation to finish', async () => { const s = await status('vm5'); return s.state === 'done' || s.state === 'paused' ? s : undefined }, 90_000)
    t.equal(end.state, 'done', `completed on the new holder (${end.reason})`)
    t.same((await cliJson<Info>(['disk', 'info', 'vm5'], zk)).blocksPerSite, { 'site-b': 24 })
    const got = Buffer.alloc(model.length)
    await fb.read(got, 0, got.length, 0)
    t.equal(sha256(got), sha256(model), 'every byte verifies, the new holder\'s write included')
  })

  t.test('kill -9 of the executing agent mid-copy: it resumes after restart and completes', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm2', '--size', '32M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const data = randomBytes(rng(2), 32 * MiB)
    const fileA = path.join(a.mountPoint, 'vm2')
    const fh = await fs.promises.open(fileA, 'r+')
    await fh.write(data, 0, data.length, 0) // hv-a now holds the lease: it will execute
    const start = await runCli(['relocate', 'vm2', '--to', 'site-b', '--rate', '6'], { zk })
    t.equal(start.code, 0, start.stderr)
    t.match(start.stdout, /started on hv-a/)
    await until('copy progress', async () => { const s = await status('vm2'); return s.progress.bytes > 4 * MiB ? s : undefined })
    await fh.close().catch(() => {})
    await a.kill('SIGKILL')
    const mid = await status('vm2')
    t.ok(mid.state === 'copying' && mid.progress.bytes < mid.plan.bytes, `killed mid-copy at ${mid.percent}%`)
    await a.restart()
    const end = await until('the relocation to finish', async () => { const s = await status('vm2'); return s.state === 'done' || s.state === 'paused' ? s : undefined }, 90_000)
    t.equal(end.state, 'done', `resumed and completed (${end.reason})`)
    const info = await cliJson<Info>(['disk', 'info', 'vm2'], zk)
    t.same(info.blocksPerSite, { 'site-b': 32 })
    t.equal(sha256(fs.readFileSync(path.join(b.mountPoint, 'vm2'))), sha256(data), 'every byte verifies')
  })

  t.test('kill -9 of a target node mid-copy pauses the relocation; no block loses its last in-sync replica', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm3', '--size', '32M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const data = randomBytes(rng(3), 32 * MiB)
    fs.writeFileSync(path.join(a.mountPoint, 'vm3'), data, { flag: 'r+' })
    const run = runCli(['relocate', 'vm3', '--to', 'site-b', '--rate', '6', '--wait'], { zk, timeoutMs: 120_000 })
    await until('copy progress', async () => { const s = await status('vm3'); return s !== undefined && s.progress.bytes > 4 * MiB ? s : undefined })
    await c.node('b2').kill('SIGKILL')
    const res = await run
    t.equal(res.code, 1, 'the CLI reports that it did not finish')
    const s = await status('vm3')
    t.equal(s.state, 'paused')
    t.match(s.reason, /b2/, `the reason names the node: ${s.reason}`)
    const info = await cliJson<Info>(['disk', 'info', 'vm3'], zk)
    t.equal(info.replicasPerNode.a1.inSync + info.replicasPerNode.a2.inSync, 64, 'the sources are still in sync for every block')
    t.equal(sha256(fs.readFileSync(path.join(b.mountPoint, 'vm3'))), sha256(data), 'every byte reads back right')
    await c.node('b2').restart()
    // Resumed, then cancelled: the targets the first run added are taken back too.
    const resumed = runCli(['relocate', 'vm3', '--to', 'site-b', '--rate', '4', '--wait'], { zk, timeoutMs: 120_000 })
    await until('the resumed copy to run', async () => { const s = await status('vm3'); return s?.state === 'copying' && s.progress.bytes > 0 ? s : undefined })
    t.equal((await runCli(['relocate', 'cancel', 'vm3'], { zk })).code, 0)
    t.equal((await resumed).code, 1, 'the cancelled run reports that it did not finish')
    await until('the rollback', async () => {
      const info = await cliJson<Info>(['disk', 'info', 'vm3'], zk)
      return Object.keys(info.replicasPerNode).sort().join() === 'a1,a2' ? info : undefined
    })
    const { uuid } = await cliJson<Info>(['disk', 'info', 'vm3'], zk)
    await until('b1 and b2 to hold none of it', async () => (await blocksOn('b1', uuid)) + (await blocksOn('b2', uuid)) === 0 ? true : undefined)
    t.pass('a cancel after a resume removes the partial replicas of both runs')
    const again = await runCli(['relocate', 'vm3', '--to', 'site-b', '--wait'], { zk, timeoutMs: 120_000 })
    t.equal(again.code, 0, `running it again completes it: ${again.stderr}`)
    t.same((await cliJson<Info>(['disk', 'info', 'vm3'], zk)).blocksPerSite, { 'site-b': 32 })
    t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'vm3'))), sha256(data), 'every byte verifies')
  })
})
