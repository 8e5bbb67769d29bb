// Issue 9, "fsync must never lie", for copies: a relocation's (and a repair's) targets make every
// copied block durable before the map marks it in sync (their fsync counters, read from Stat,
// rise before the in-sync count does), the relocated bytes verify, and a storage node restarted
// after kill -9 syncs its data dir before it serves (log line with the duration, fsync counter).
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
// Per copied block a target fsyncs its version file and the disk directory (one version each here).
const FSYNCS_PER_COPIED_BLOCK = 2

interface Info { replicasPerNode: Record<string, { inSync: number, syncing: number, stale: number }>, uuid: string }

t.test('durable copies', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  // The controller would repair b2's stale blocks by itself; this test checks `disk repair`'s own run.
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-controller'] })
  const fsyncs = async (nodeId: string): Promise<number> => {
    const client = new StorageClient({ nodeId, address: c.node(nodeId).address })
    try { return (await client.stat()).fsyncCount } finally { client.close() }
  }
  const fill = (name: string, sizeBytes: number, seed: number): Buffer => {
    const data = randomBytes(rng(seed), sizeBytes)
    const fd = fs.openSync(path.join(a.mountPoint, name), 'r+')
    try { fs.writeSync(fd, data, 0, data.length, 0); fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    return data
  }

  t.test('relocation: each target fsyncs the copied blocks before the map marks them in sync', async (t) => {
    // 192 blocks of 512 KiB: the executor marks them in batches of 64, so the map moves in steps
    // a poll can see between; --rate stretches the copy over a few seconds.
    const blocks = 192
    const sizeBytes = blocks * 512 * KiB
    t.equal((await runCli(['disk', 'create', 'ord', '--size', `${sizeBytes / MiB}M`, '--block-size', '512K', '--site', 'site-a'], { zk })).code, 0)
    const model = fill('ord', sizeBytes, 7)
    const base = { b1: await fsyncs('b1'), b2: await fsyncs('b2') }
    const run = runCli(['relocate', 'ord', '--to', 'site-b', '--rate', '24', '--wait'], { zk, timeoutMs: 120_000 })
    let done = false
    void run.finally(() => { done = true })
    // Map first, then the counters: whatever the map called in sync must already be counted.
    const samples: Array<{ node: string, inSync: number, fsyncs: number }> = []
    while (!done) {
      const info = await cliJson<Info>(['disk', 'info', 'ord'], zk)
      for (const node of ['b1', 'b2'] as const) {
        samples.push({ node, inSync: info.replicasPerNode[node]?.inSync ?? 0, fsyncs: await fsyncs(node) - base[node] })
      }
    }
    const res = await run
    t.equal(res.code, 0, res.stderr)
    const mid = samples.filter(s => s.inSync > 0 && s.inSync < blocks)
    t.comment(`samples: ${samples.map(s => `${s.node} ${s.inSync}/${s.fsyncs}`).join(', ')}`)
    t.ok(samples.every(s => s.fsyncs >= s.inSync * FSYNCS_PER_COPIED_BLOCK), 'at every sample, a target had fsynced (file + directory) at least every block the map called in sync on it')
    t.ok(samples.length > 0, `${samples.length} samples, ${mid.length} of them taken mid-copy`)
    for (const node of ['b1', 'b2']) {
      const delta = await fsyncs(node) - base[node as 'b1' | 'b2']
      t.ok(delta >= blocks * FSYNCS_PER_COPIED_BLOCK, `${node}: ${delta} fsyncs for ${blocks} copied blocks`)
    }
    const info = await cliJson<Info>(['disk', 'info', 'ord'], zk)
    t.same(Object.keys(info.replicasPerNode).sort(), ['b1', 'b2'], 'only the targets hold the disk')
    t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'ord'))), sha256(model), 'every relocated byte verifies')
  })

  t.test('64 MiB in 4 MiB blocks, moved three times: time of each copy, every byte verifies', async (t) => {
    const sizeBytes = 64 * MiB
    t.equal((await runCli(['disk', 'create', 'big', '--size', '64M', '--site', 'site-a'], { zk })).code, 0)
    const model = fill('big', sizeBytes, 11)
    const tookMs: number[] = []
    for (const [site, targets] of [['site-b', ['b1', 'b2']], ['site-a', ['a1', 'a2']], ['site-b', ['b1', 'b2']]] as const) {
      const base = await Promise.all(targets.map(fsyncs))
      const res = await runCli(['relocate', 'big', '--to', site, '--no-probe', '--wait', '--json'], { zk, timeoutMs: 120_000 })
      t.equal(res.code, 0, res.stderr)
      const rec = JSON.parse(res.stdout.slice(res.stdout.lastIndexOf('\n{') + 1)) as { createdAtMs: number, finishedAtMs: number, state: string }
      t.equal(rec.state, 'done')
      tookMs.push(rec.finishedAtMs - rec.createdAtMs)
      const after = await Promise.all(targets.map(fsyncs))
      targets.forEach((node, i) => t.ok(after[i] - base[i] >= 16 * FSYNCS_PER_COPIED_BLOCK, `${node} fsynced every copied block (${after[i] - base[i]})`))
      t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'big'))), sha256(model), `every byte verifies after the move to ${site}`)
    }
    t.comment(`relocated 64 MiB (16 blocks of 4 MiB, 2 targets): ${tookMs.join(', ')} ms (record created → done)`)
  })

  t.test('repair: the node that gets the stale blocks back fsyncs them before they count', async (t) => {
    t.equal((await runCli(['disk', 'create', 'rep', '--size', '16M', '--block-size', '1M', '--nodes', 'b1,b2'], { zk })).code, 0)
    const model = fill('rep', 4 * MiB, 3)
    await c.node('b2').kill('SIGKILL')
    // Writes while b2 is down mark it stale for those blocks.
    const more = randomBytes(rng(4), 8 * MiB)
    const fd = fs.openSync(path.join(a.mountPoint, 'rep'), 'r+')
    try { fs.writeSync(fd, more, 0, more.length, 4 * MiB); fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
    const full = Buffer.concat([model, more, Buffer.alloc(4 * MiB)])
    await c.node('b2').restart()
    const stale = (await cliJson<Info>(['disk', 'info', 'rep'], zk)).replicasPerNode.b2?.stale ?? 0
    t.ok(stale >= 8, `b2 is stale for ${stale} blocks`)
    const before = await fsyncs('b2')
    const res = await runCli(['disk', 'repair', 'rep'], { zk, timeoutMs: 120_000 })
    t.equal(res.code, 0, res.stderr)
    const info = await untilValue('repair in sync', async () => {
      const i = await cliJson<Info>(['disk', 'info', 'rep'], zk)
      return i.replicasPerNode.b2?.stale === 0 ? i : undefined
    }, 60_000, 300)
    t.equal(info.replicasPerNode.b2.inSync, 16)
    t.ok(await fsyncs('b2') - before >= stale * FSYNCS_PER_COPIED_BLOCK, 'b2 fsynced every repaired block')
    t.equal(sha256(fs.readFileSync(path.join(a.mountPoint, 'rep'))), sha256(full), 'every byte verifies')
  })

  t.test('a node restarted after kill -9 syncs its data dir before it serves', async (t) => {
    const node = c.node('b1')  // it holds the relocated disks' blocks
    const listening = (): Array<{ dataDirSyncMs: number, dataDirSyncFiles: number }> => fs.readFileSync(node.logFile, 'utf8').split('\n')
      .filter(l => l.includes('"storage node listening"')).map(l => JSON.parse(l))
    const startsBefore = listening().length
    await node.kill('SIGKILL')
    await node.restart()
    const starts = listening()
    t.equal(starts.length, startsBefore + 1, 'one more start in the log')
    const last = starts[starts.length - 1]
    t.type(last.dataDirSyncMs, 'number', `data dir synced at start in ${last.dataDirSyncMs} ms (${last.dataDirSyncFiles} block files)`)
    t.ok(await fsyncs('b1') >= 1, 'the restarted node counted the start-up sync')
  })
})
