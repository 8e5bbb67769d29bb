// Issue 14 part 1: `ukai health` as an operator runs it — the real CLI against real ZooKeeper,
// storage nodes and a mount. Each reason is caused for real (a node killed, both replicas' nodes
// killed, a full node, a paused and an abandoned relocation, ZooKeeper unreachable) and must be
// named with what to do, and go away once fixed. `disk list` shows each disk's state.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { RelocationRecord } from '../src/meta/schema'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

const MiB = 1024 * 1024
const SESSION = ['--zk-session-timeout-ms', '4000'] // a killed node's liveness goes within ~4 s

interface Report {
  status: 'OK' | 'WARN' | 'ERR'
  checks: Array<{ code: string, level: string, summary: string, detail: string[], action: string }>
  nodes: { total: number, up: number, down: number, full: number }
  disks: { total: number, healthy: number }
}

async function health (zk: string): Promise<{ code: number, report: Report, text: string }> {
  const json = await runCli(['health', '--json'], { zk })
  const text = await runCli(['health', '--detail'], { zk })
  return { code: json.code, report: JSON.parse(json.stdout) as Report, text: text.stdout }
}

function codes (r: Report): string[] { return r.checks.map(c => c.code).sort() }

async function stateOf (zk: string, disk: string): Promise<string | undefined> {
  return (await cliJson<Array<{ name: string, state: string }>>(['disk', 'list'], zk)).find(d => d.name === disk)?.state
}

async function write (file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await fs.promises.open(file, 'r+')
  try {
    await fh.write(data, 0, data.length, offset)
    await fh.sync()
  } finally {
    await fh.close()
  }
}

t.test('ukai health: each reason, named with what to do, and gone once fixed', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const n1 = await startNode(t, { zk, id: 'n1', site: 's', extraArgs: SESSION })
  const n2 = await startNode(t, { zk, id: 'n2', site: 's', extraArgs: SESSION })
  // The controller would repair the nodes's stale blocks by itself; this test checks `disk repair`'s own run.
  const agent = await startAgent(t, { zk, host: 'hv', site: 's', extraArgs: ['--no-controller'] })

  const ok = await health(zks)
  t.equal(ok.code, 0, 'OK exits 0')
  t.equal(ok.report.status, 'OK')
  t.same(ok.report.nodes, { total: 2, up: 2, down: 0, full: 0 }, 'both nodes up')
  t.match(ok.text, /^HEALTH_OK\n/, 'the text says HEALTH_OK first')

  t.equal((await runCli(['disk', 'create', 'vol', '--size', '4M', '--block-size', '64K', '--site', 's'], { zk: zks })).code, 0)
  const file = path.join(agent.mountPoint, 'vol')
  const model = crypto.randomBytes(4 * MiB)
  await write(file, 0, model.subarray(0, 2 * MiB))
  t.equal(await stateOf(zks, 'vol'), 'healthy', 'disk list: healthy')

  await n2.kill('SIGKILL')
  await until('n2 to be seen down', async () => (await health(zks)).report.nodes.down === 1, 30_000, 500)
  await write(file, 2 * MiB, model.subarray(2 * MiB))
  const warn = await health(zks)
  t.equal(warn.code, 0, 'WARN exits 0')
  t.equal(warn.report.status, 'WARN')
  t.same(codes(warn.report), ['DISK_DEGRADED', 'NODE_DOWN'], 'a node down, and the blocks written meanwhile below their replica count')
  t.match(warn.text, /\[WARN\] NODE_DOWN: 1 storage node down\n {4}node n2 \(site s, [^)]+\) is down\n {4}→ start the node again/, '--detail names the node and says what to do')
  t.match(warn.text, /\[WARN\] DISK_DEGRADED: 1 disk with blocks below their replica count\n {4}disk vol: 32 blocks below the replica count\n {4}→ run 'ukai disk repair DISK'/, 'and the disk, with the number of blocks')
  t.equal(await stateOf(zks, 'vol'), 'degraded', 'disk list: degraded')

  await n1.kill('SIGKILL')
  await until('n1 to be seen down', async () => (await health(zks)).report.nodes.down === 2, 30_000, 500)
  const err = await health(zks)
  t.equal(err.code, 1, 'ERR exits 1')
  t.equal(err.report.status, 'ERR')
  t.ok(codes(err.report).includes('DISK_UNAVAILABLE'), 'blocks whose only in-sync replicas are on dead nodes: DISK_UNAVAILABLE')
  t.match(err.text, /^HEALTH_ERR: /, 'the text starts with HEALTH_ERR')
  t.equal(await stateOf(zks, 'vol'), 'unavailable', 'disk list: unavailable')

  await n1.restart()
  await n2.restart()
  await until('both nodes up again', async () => (await health(zks)).report.nodes.up === 2, 30_000, 500)
  t.same(codes((await health(zks)).report), ['DISK_DEGRADED'], 'nodes up: what is left is the repair')
  const repair = await runCli(['disk', 'repair', 'vol'], { zk: zks, timeoutMs: 120_000 })
  t.equal(repair.code, 0, `disk repair exits 0${repair.code !== 0 ? `: ${repair.stderr}` : ''}`)
  const healed = await health(zks)
  t.equal(healed.report.status, 'OK', 'after the repair: HEALTH_OK')
  t.equal(await stateOf(zks, 'vol'), 'healthy', 'disk list: healthy again')
  const got = Buffer.alloc(model.length)
  const fh = await fs.promises.open(file, 'r')
  await fh.read(got, 0, got.length, 0)
  await fh.close()
  t.ok(got.equals(model), 'every byte is there')

  t.test('relocations: paused, and abandoned by their executor', async (t) => {
    const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
    t.teardown(() => meta.close())
    const base: RelocationRecord = {
      v: 1, id: 'r1', disk: 'vol', targetNodes: ['n1', 'n2'], dropNodes: [], addedNodes: [], rateBytesPerSec: 0,
      state: 'paused', reason: 'target node n3 is unreachable', executor: '',
      plan: { blocks: 64, writtenBlocks: 64, bytes: 4 * MiB }, progress: { blocks: 0, bytes: 0, updatedAtMs: Date.now() }, createdAtMs: Date.now(), finishedAtMs: 0
    }
    // The repair above left its (done) relocation record: a new one replaces it.
    if (await meta.getRelocation('vol') !== null) await meta.removeRelocation('vol')
    await meta.createRelocation(base)
    const paused = await health(zks)
    t.same(codes(paused.report), ['RELOCATION_PAUSED'])
    t.match(paused.text, /disk vol: target node n3 is unreachable/, 'with its reason')
    t.equal(await stateOf(zks, 'vol'), 'relocation-paused')
    await meta.removeRelocation('vol')
    await meta.createRelocation({ ...base, state: 'copying', reason: '', executor: 'gone-host', progress: { blocks: 3, bytes: 3 * 64 * 1024, updatedAtMs: Date.now() - 60_000 } })
    const stalled = await health(zks)
    t.same(codes(stalled.report), ['RELOCATION_STALLED'], 'copying, its executor holds no lease, no progress for a minute')
    t.match(stalled.text, /executor gone-host no longer holds the lease, no progress for 6\d s/)
    t.equal(await stateOf(zks, 'vol'), 'relocating')
    await meta.removeRelocation('vol')
    t.equal((await health(zks)).report.status, 'OK', 'gone with the record')
  })

  t.test('a full node', async (t) => {
    await startNode(t, { zk, id: 'tiny', site: 'small', capacity: '1M' })
    t.equal((await runCli(['disk', 'create', 'fill', '--size', '2M', '--block-size', '64K', '--replicas', '1', '--nodes', 'tiny'], { zk: zks })).code, 0)
    const fill = path.join(agent.mountPoint, 'fill')
    await until('the new disk to show on the mount', async () => fs.existsSync(fill), 10_000, 100)
    const fh = await fs.promises.open(fill, 'r+')
    try {
      for (let off = 0; off < 2 * MiB; off += 64 * 1024) await fh.write(Buffer.alloc(64 * 1024, 1), 0, 64 * 1024, off).catch(() => undefined)
    } finally {
      await fh.close()
    }
    // The node reports its usage every 5 s.
    await until('tiny to report itself full', async () => codes((await health(zks)).report).includes('NODE_FULL'), 30_000, 500)
    const full = await health(zks)
    t.equal(full.report.status, 'ERR', 'a full node is an error: its new blocks fail')
    t.equal(full.code, 1)
    t.match(full.text, /\[ERR\] NODE_FULL: 1 storage node full\n {4}node tiny \(site small\) has \d+ bytes free/, 'named, with its free bytes')
  })

  t.test('ZooKeeper unreachable', async (t) => {
    const r = await runCli(['--zk-timeout-ms', '1000', 'health', '--json'], { zk: '127.0.0.1:1' })
    t.equal(r.code, 1, 'exit 1')
    const report = JSON.parse(r.stdout) as Report
    t.same([report.status, codes(report)], ['ERR', ['ZK_UNREACHABLE']], 'ERR: ZK_UNREACHABLE, still as JSON')
  })
})
