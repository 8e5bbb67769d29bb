// A node's host crashes after acknowledging a write and before the agent's flush: the page cache,
// and the write, are gone; the node comes back and its fsync succeeds (nothing to sync). The
// node's incarnation (its host's boot id, in every write and flush answer:
// src/storagenode/incarnation.ts) tells the agent that flush cannot cover the write
// (src/vdisk/dirty-flush.ts):
// - 2 replicas: the rebooted one is marked stale for the block (the other, in sync, fsynced
//   and holds the bytes); reads return the new bytes;
// - 1 replica: the flush fails with IO_ERROR (EIO for the guest), and again on the next try:
//   nothing durable anywhere, nothing claimed;
// - a syncing replica (a relocation's target, whose flush the guest's does not wait for) is
//   marked stale too (flushTrailing).
// The host crash is simulated deterministically: kill -9, the disk's directory on the node put
// back as it was before the write (the write never left the page cache), and a restart under
// another boot id (UKAI_FAULT_BOOT_ID). A kill -9 and restart on the same boot is no crash of
// the page cache, and its flush still succeeds (test/vdisk-flush-behind.test.ts).
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { FAULT_BOOT_ID_ENV } from '../src/storagenode/incarnation'
import { LeaseManager } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { NodePool } from '../src/vdisk/node-pool'
import { VirtualDisk } from '../src/vdisk/virtual-disk'
import { TestLike, startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { until } from './helpers/until'

const MiB = 1024 * 1024

type Node = Awaited<ReturnType<typeof startNode>>

async function openDisk (t: TestLike, zks: string, name: string): Promise<VirtualDisk> {
  const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
  t.teardown(async () => { await meta.close() })
  const pool = new NodePool(meta, { host: 'hv-test', site: 'site-a' })
  await pool.ready()
  t.teardown(async () => { await pool.close() })
  const leases = new LeaseManager(meta, 'hv-test', { onHandoverRequested: () => {}, onLost: () => {} })
  // flushBehindMs 0: written blocks stay dirty until the flush the test asks for.
  const disk = await VirtualDisk.open({ meta, pool, leases, io: { readBytes: 0, writeBytes: 0 }, ioRetryMs: 5_000, flushBehindMs: 0 }, name)
  t.teardown(async () => { await disk.destroy() })
  return disk
}

// The host crash: the node dies with -9 and its disk directory is put back as `saved` (taken
// after the last flush), then it starts again as after a reboot (another boot id); returns
// once the agent's client reaches it.
async function crashHost (node: Node, uuid: string, saved: string, disk: VirtualDisk): Promise<void> {
  await node.kill('SIGKILL')
  const dir = path.join(node.dataDir, 'disks', uuid)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.cpSync(saved, dir, { recursive: true })
  process.env[FAULT_BOOT_ID_ENV] = `rebooted-${node.id}-${Date.now()}`
  try { await node.restart() } finally { delete process.env[FAULT_BOOT_ID_ENV] }
  const client = (disk as unknown as { pool: NodePool }).pool.client(node.id)
  await until(`${node.id} answers again`, async () => await client.ping().then(() => true, () => false), 30_000, 100)
}

function saveDiskDir (t: TestLike, node: Node, uuid: string): string {
  const saved = fs.mkdtempSync(path.join(node.dir, 'saved-'))
  fs.cpSync(path.join(node.dataDir, 'disks', uuid), saved, { recursive: true })
  t.teardown(() => fs.rmSync(saved, { recursive: true, force: true }))
  return saved
}

function blockFile (dataDir: string, uuid: string, block: number): Buffer {
  return fs.readFileSync(path.join(dataDir, 'disks', uuid, `${block}.1`))
}

// A 4 MiB disk of 1 MiB blocks on a1 and a2 (one site), opened in this process.
async function twoReplicaDisk (t: Test, name: string): Promise<{ a1: Node, a2: Node, disk: VirtualDisk, uuid: string }> {
  const zk = await startZk(t)
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
  t.equal((await runCli(['disk', 'create', name, '--size', '4M', '--block-size', '1M', '--nodes', 'a1,a2'], { zk: zk.connectString })).code, 0)
  const disk = await openDisk(t, zk.connectString, name)
  return { a1, a2, disk, uuid: disk.record.uuid }
}

t.test('2 replicas: the replica whose host lost the write is marked stale, not vouched for', async (t) => {
  const { a1, a2, disk, uuid } = await twoReplicaDisk(t, 'vol')
  const old = randomBytes(rng(31), MiB)
  await disk.write(0, old)
  await disk.flush()
  const saved = saveDiskDir(t, a2, uuid)
  const state = (node: string): string | undefined => disk.replicasOf(0).find(r => r.node === node)?.state

  // A plain kill -9 and restart on the same boot: the page cache kept the write, the node's start
  // synced it, and the flush counts: a2 stays in sync.
  await disk.write(0, old.subarray(0, 4096))
  await a2.kill('SIGKILL')
  await a2.restart()
  const client = (disk as unknown as { pool: NodePool }).pool.client('a2')
  await until('a2 answers again', async () => await client.ping().then(() => true, () => false), 30_000, 100)
  await disk.flush()
  t.equal(state('a2'), 'in-sync', 'after a process restart (same boot id) a2 stays in sync')
  fs.rmSync(saved, { recursive: true, force: true })
  fs.cpSync(path.join(a2.dataDir, 'disks', uuid), saved, { recursive: true })

  const data = randomBytes(rng(32), 64 * 1024)
  await disk.write(4096, data)  // acknowledged by a1 and a2, dirty on both
  await crashHost(a2, uuid, saved, disk)
  t.ok(blockFile(a2.dataDir, uuid, 0).subarray(4096, 4096 + data.length).equals(old.subarray(4096, 4096 + data.length)), 'a2 came back without the write')

  await disk.flush()
  t.pass('the flush succeeds: a1 holds the write durably')
  t.equal(state('a2'), 'stale', 'a2, rebooted since it acknowledged the write, is marked stale for the block')
  t.equal(state('a1'), 'in-sync', 'a1 stays in sync')
  t.ok(blockFile(a1.dataDir, uuid, 0).subarray(4096, 4096 + data.length).equals(data), 'a1\'s block file holds the write')
  const got = await disk.read(0, MiB)
  const want = Buffer.from(old)
  data.copy(want, 4096)
  t.ok(got.equals(want), 'the disk reads the new bytes, byte for byte')
})

t.test('1 replica: the flush fails with IO_ERROR when the only node lost the write', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  t.equal((await runCli(['disk', 'create', 'one', '--size', '4M', '--block-size', '1M', '--nodes', 'a1'], { zk: zks })).code, 0)
  const disk = await openDisk(t, zks, 'one')
  const { uuid } = disk.record
  const old = randomBytes(rng(41), MiB)
  await disk.write(0, old)
  await disk.flush()
  const saved = saveDiskDir(t, a1, uuid)

  const data = randomBytes(rng(42), 64 * 1024)
  await disk.write(MiB + 8192, data)  // block 1, never written before: absent on a1 after the crash
  await disk.write(4096, data)        // block 0
  await crashHost(a1, uuid, saved, disk)
  await t.rejects(disk.flush(), { code: 'IO_ERROR', message: /rebooted since it acknowledged/ }, 'the flush fails: nothing can vouch for the writes')
  await t.rejects(disk.flush(), { code: 'IO_ERROR' }, 'and fails again: a failed flush is not forgotten')
  t.equal(disk.replicasOf(0).find(r => r.node === 'a1')?.state, 'in-sync', 'the only replica is not marked stale (that would lose the block)')
})

t.test('a syncing replica whose host lost the write is marked stale (the flush not waited for)', async (t) => {
  const { a1, a2, disk, uuid } = await twoReplicaDisk(t, 'mig')
  await disk.write(0, randomBytes(rng(51), MiB))
  await disk.flush()
  const saved = saveDiskDir(t, a2, uuid)
  // a2 becomes a syncing replica (a relocation's target): the guest's flush does not wait for it.
  await disk.map.update(null, set => set.map(r => r.node === 'a2' ? { node: 'a2', state: 'syncing' as const } : r))
  const data = randomBytes(rng(52), 64 * 1024)
  await disk.write(4096, data)
  await crashHost(a2, uuid, saved, disk)
  await disk.flush()
  await disk.flushEverywhere()
  t.equal(disk.replicasOf(0).find(r => r.node === 'a2')?.state, 'stale', 'a2 is marked stale, never vouched for (a relocation would copy the block again)')
  t.equal(disk.replicasOf(0).find(r => r.node === 'a1')?.state, 'in-sync', 'a1 stays in sync')
  t.ok(blockFile(a1.dataDir, uuid, 0).subarray(4096, 4096 + data.length).equals(data), 'a1\'s block file holds the write')
})
