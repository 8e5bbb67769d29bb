// Flush-behind (src/vdisk/dirty-flush.ts): written blocks become durable on every replica in the
// background, without the guest's fsync — and that never weakens what fsync promises:
// - after writes and a short idle the disk's dirty set is empty (the agent's metrics), the nodes
//   fsynced (their fsync counts moved) and both replicas' block files hold the written bytes;
// - a background flush that fails (the only replica killed with -9 holding dirty blocks) keeps
//   them dirty: the guest's fsync fails with EIO, again on the next try, and succeeds only once
//   the node is back (its start syncs the data dir), with the bytes intact;
// - a guest's flush does not wait for a replica still syncing (a relocation's target; here
//   stopped with SIGSTOP): it returns once the in-sync replica fsynced, the target is not marked
//   stale, and flushEverywhere() — what the relocation runs before marking it in sync — waits
//   until the target answers; a target whose fsync fails is marked stale for the block (also
//   when it was marked in sync meanwhile), never vouched for.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { freePort } from '../src/dev/free-port'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { LeaseManager } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { FAULT_FSYNC_EIO_FILE_ENV } from '../src/storagenode/block-store'
import { NodePool } from '../src/vdisk/node-pool'
import { VirtualDisk } from '../src/vdisk/virtual-disk'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { fsyncCount } from './helpers/replica-faults'
import { until } from './helpers/until'

const MiB = 1024 * 1024
const SESSION = ['--zk-session-timeout-ms', '4000']

const skip = fuseUnavailable()

// One sample of the agent's metrics endpoint (0 when the series is absent).
async function metric (address: string, name: string, disk: string): Promise<number> {
  const res = await fetch(`http://${address}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
  const line = (await res.text()).split('\n').find(l => l.startsWith(`${name}{`) && l.includes(`disk="${disk}"`))
  return line === undefined ? 0 : Number(line.split(' ').pop())
}

// A write is acknowledged once the in-sync replicas answered; a syncing one's answer trails,
// holding the block's write lock (trailing writes, src/vdisk/data-path.ts): the copy lock of
// block 0 is had once b1 answered the writes before.
async function b1Answered (disk: VirtualDisk): Promise<void> {
  await disk.blockLocks.withCopy(0, async () => {})
}

// The head version file of `block` on a node (epoch 1: a new disk's, no snapshot taken).
function blockFile (dataDir: string, uuid: string, block: number): string {
  return path.join(dataDir, 'disks', uuid, `${block}.1`)
}

t.test('after writes and a short idle the dirty set is empty without any fsync', { skip: skip ?? false }, async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const nodes = [await startNode(t, { zk, id: 'a1', site: 'site-a' }), await startNode(t, { zk, id: 'a2', site: 'site-a' })]
  const mport = await freePort()
  const maddr = `127.0.0.1:${mport}`
  // The default --flush-behind-ms (100).
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: [...SESSION, '--metrics-listen', maddr] })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '8M', '--block-size', '1M', '--nodes', 'a1,a2'], { zk: zks })).code, 0)
  const { uuid } = await cliJson<{ uuid: string }>(['disk', 'info', 'vol'], zks)

  const before = await Promise.all(nodes.map(async n => await fsyncCount(n.id, n.address)))
  const data = randomBytes(rng(7), 3 * MiB)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  // Blocks 1..3 (offset 1 MiB), written in 256 KiB pieces; no fsync, the handle stays open.
  for (let off = 0; off < data.length; off += 256 * 1024) await fh.write(data, off, 256 * 1024, MiB + off)
  await until('the dirty set to empty', async () => await metric(maddr, 'ukai_disk_dirty_blocks', 'vol') === 0 &&
    await metric(maddr, 'ukai_disk_flushes_behind_total', 'vol') >= 1, 10_000, 50)
  t.pass('ukai_disk_dirty_blocks is 0 and a background flush ran')
  t.equal(await metric(maddr, 'ukai_disk_flushes_total', 'vol'), 0, 'no fsync was asked for through the mount')
  const after = await Promise.all(nodes.map(async n => await fsyncCount(n.id, n.address)))
  nodes.forEach((n, i) => t.ok(after[i] > before[i], `${n.id} fsynced (${before[i]} → ${after[i]} fsync calls)`))
  for (const n of nodes) {
    for (let b = 1; b <= 3; b++) {
      const got = fs.readFileSync(blockFile(n.dataDir, uuid, b))
      t.ok(got.subarray(0, MiB).equals(data.subarray((b - 1) * MiB, b * MiB)), `${n.id}: block ${b}'s file holds the written bytes`)
    }
  }
  // A second round: the set fills and empties again (flush-behind is re-armed by new writes).
  const flushesBefore = await metric(maddr, 'ukai_disk_flushes_behind_total', 'vol')
  await fh.write(data, 0, 4096, 0)
  await until('the second background flush', async () => await metric(maddr, 'ukai_disk_flushes_behind_total', 'vol') > flushesBefore &&
    await metric(maddr, 'ukai_disk_dirty_blocks', 'vol') === 0, 10_000, 50)
  for (const n of nodes) t.ok(fs.readFileSync(blockFile(n.dataDir, uuid, 0)).subarray(0, 4096).equals(data.subarray(0, 4096)), `${n.id}: block 0 holds the second write`)
})

t.test('a failed background flush keeps the blocks dirty: fsync reports EIO', { skip: skip ?? false }, async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const node = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const mport = await freePort()
  const maddr = `127.0.0.1:${mport}`
  // A longer delay so the node is surely dead before the background flush of the second write.
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: [...SESSION, '--metrics-listen', maddr, '--flush-behind-ms', '1500', '--io-retry-ms', '1000'] })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '4M', '--block-size', '1M', '--replicas', '1', '--nodes', 'a1'], { zk: zks })).code, 0)
  const file = path.join(agent.mountPoint, 'vol')
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const first = randomBytes(rng(11), 64 * 1024)
  await fh.write(first, 0, first.length, 0)
  await until('the first write flushed behind', async () => await metric(maddr, 'ukai_disk_flushes_behind_total', 'vol') >= 1 &&
    await metric(maddr, 'ukai_disk_dirty_blocks', 'vol') === 0, 10_000, 50)

  // The second write is acknowledged by a1, which dies before any flush covers it.
  const second = randomBytes(rng(12), 64 * 1024)
  await fh.write(second, 0, second.length, MiB)
  await node.kill('SIGKILL')
  const logged = (): boolean => fs.readFileSync(agent.logFile, 'utf8').includes('background flush failed')
  await until('the background flush to fail', async () => logged(), 15_000, 100)
  t.equal(await metric(maddr, 'ukai_disk_flushes_behind_total', 'vol'), 1, 'the failed background flush is not counted as done')
  t.ok(await metric(maddr, 'ukai_disk_dirty_blocks', 'vol') >= 1, 'its block is still dirty')
  await t.rejects(fh.sync(), { code: 'EIO' }, 'fsync after the failed background flush: EIO, no durability claimed')
  await t.rejects(fh.sync(), { code: 'EIO' }, 'and again on the next fsync (still dirty)')

  // The node back: its start syncs its data dir, the fsync now succeeds, and the bytes are there.
  await node.restart()
  await until('fsync to succeed once a1 is back', async () => await fh.sync().then(() => true, () => false), 30_000, 200)
  t.equal(await metric(maddr, 'ukai_disk_dirty_blocks', 'vol'), 0, 'nothing dirty after the successful fsync')
  const got = Buffer.alloc(second.length)
  await fh.read(got, 0, got.length, MiB)
  t.ok(got.equals(second), 'the second write reads back byte for byte')
})

t.test('a guest flush does not wait for a syncing replica; flushEverywhere does', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  // b1's fsync fails with EIO while this file exists (block-store.ts).
  const failB1 = path.join(fs.mkdtempSync(path.join(zk.dir, 'faults-')), 'fail-fsync-b1')
  process.env[FAULT_FSYNC_EIO_FILE_ENV] = failB1
  let b1
  try { b1 = await startNode(t, { zk, id: 'b1', site: 'site-b' }) } finally { delete process.env[FAULT_FSYNC_EIO_FILE_ENV] }
  t.equal((await runCli(['disk', 'create', 'mig', '--size', '4M', '--block-size', '1M', '--nodes', 'a1'], { zk: zks })).code, 0)
  const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
  t.teardown(async () => { await meta.close() })
  // Hung detection far off: a flush that waited for the stopped node would wait, not fail.
  const pool = new NodePool(meta, { host: 'hv-test', site: 'site-a', replicaHungMs: 60_000 })
  await pool.ready()
  t.teardown(async () => { await pool.close() })
  const leases = new LeaseManager(meta, 'hv-test', { onHandoverRequested: () => {}, onLost: () => {} })
  const io = { readBytes: 0, writeBytes: 0 }
  const disk = await VirtualDisk.open({ meta, pool, leases, io, ioRetryMs: 60_000, flushBehindMs: 0 }, 'mig')
  t.teardown(async () => { await disk.destroy() })
  await disk.write(0, randomBytes(rng(20), MiB))
  await disk.flush()
  // b1 becomes a syncing replica of every block, as a relocation's first step does.
  await disk.map.update(null, set => [...set, { node: 'b1', state: 'syncing' as const }])
  const data = randomBytes(rng(21), MiB)
  await disk.write(0, data)  // to a1 and b1
  await b1Answered(disk)
  const { uuid } = disk.record
  await b1.kill('SIGSTOP')
  t.teardown(async () => { await b1.kill('SIGCONT') })
  const before = await fsyncCount('a1', a1.address)
  const started = Date.now()
  await disk.flush()
  const tookMs = Date.now() - started
  t.ok(tookMs < 5_000, `the guest's flush returned without b1 (${tookMs} ms)`)
  t.ok(await fsyncCount('a1', a1.address) > before, 'a1, the in-sync replica, fsynced')
  t.equal(disk.replicasOf(0).find(r => r.node === 'b1')?.state, 'syncing', 'b1 is still syncing, not marked stale')
  t.ok((io as { dirtyBlocks?: number }).dirtyBlocks === 1, 'b1\'s block counts as dirty until b1 answers')
  let everywhereDone = false
  const everywhere = disk.flushEverywhere().then(() => { everywhereDone = true })
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.notOk(everywhereDone, 'flushEverywhere waits for b1')
  await b1.kill('SIGCONT')
  await everywhere
  t.equal((io as { dirtyBlocks?: number }).dirtyBlocks, 0, 'nothing dirty once b1 fsynced')
  t.ok(fs.readFileSync(blockFile(b1.dataDir, uuid, 0)).subarray(0, MiB).equals(data), 'b1\'s block file holds the write')

  // b1's fsync fails: the guest's flush still succeeds (a1), and b1 is marked stale for the
  // block — never vouched for: had the relocation marked it in sync meanwhile, a b1 that lost
  // its page cache would answer the next fsync with success without the write.
  await disk.write(0, randomBytes(rng(22), 4096))
  fs.writeFileSync(failB1, '')
  await disk.flush()
  t.pass('the guest\'s flush succeeds on a1 while b1\'s fsync fails')
  await disk.flushEverywhere()
  t.equal(disk.replicasOf(0).find(r => r.node === 'b1')?.state, 'stale', 'b1 is marked stale for the block its fsync failed (the copy sends it again)')
  t.equal(disk.replicasOf(0).find(r => r.node === 'a1')?.state, 'in-sync', 'a1 keeps it in sync')
  t.equal((io as { dirtyBlocks?: number }).dirtyBlocks, 0, 'nothing dirty: a1 fsynced, b1 owes nothing for a stale replica')
  fs.rmSync(failB1)

  // The same failure after b1 was marked in sync in between (the relocation's batch commit
  // racing the guest's flush): b1 is marked stale all the same.
  await disk.map.update(null, set => set.map(r => r.node === 'b1' ? { node: 'b1', state: 'syncing' as const } : r))
  await disk.write(0, randomBytes(rng(23), 4096))
  await b1Answered(disk)
  await b1.kill('SIGSTOP')
  await disk.flush()  // returns on a1; b1's flush waits, stopped
  await disk.map.update(null, set => set.map(r => r.node === 'b1' ? { node: 'b1', state: 'in-sync' as const } : r))
  fs.writeFileSync(failB1, '')
  await b1.kill('SIGCONT')
  // b1 answers that flush with EIO; then it answers every fsync with success, as a node whose
  // host crashed and came back without the write answers the next one: nothing may vouch for it.
  const b1State = (): string | undefined => disk.replicasOf(0).find(r => r.node === 'b1')?.state
  await until('b1 marked stale after its failed flush', async () => b1State() === 'stale', 10_000, 50).catch(() => {})
  fs.rmSync(failB1)
  await disk.flushEverywhere()
  t.equal(b1State(), 'stale', 'marked in sync meanwhile, b1 is marked stale when its flush fails, and stays so after a later fsync succeeds')
})
