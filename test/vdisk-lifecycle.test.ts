// The disk engine's lifecycle (src/lib/lifecycle.ts applied to VirtualDisk), in process against a
// real ZooKeeper and real storage nodes:
// - close() called twice at once flushes once and lets the lease go once (both calls get the one
//   promise; the nodes' fsync counts move as for one flush);
// - destroy(err) flushes nothing (the nodes' fsync counts stay), lets the lease go, and later
//   writes and fsyncs fail with err; close() after it returns the destroy's promise;
// - destroy(err) fails a write that waits for an unreachable replica at once, not after
//   --io-retry-ms.
import t from 'tap'
import { LeaseManager } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { NodePool } from '../src/vdisk/node-pool'
import { VirtualDisk } from '../src/vdisk/virtual-disk'
import { startNode, startZk, type NodeFixture } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { fsyncCount } from './helpers/replica-faults'
import { processZkAuth } from '../src/dev/process-zk-auth'

const MiB = 1024 * 1024
const IO_RETRY_MS = 60_000  // far longer than the test waits: only destroy can end the wait

async function fsyncCounts (nodes: NodeFixture[]): Promise<number[]> {
  return await Promise.all(nodes.map(async n => await fsyncCount(n.id, n.address)))
}

t.test('VirtualDisk close and destroy', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const nodes = [await startNode(t, { zk, id: 'a1', site: 'site-a' }), await startNode(t, { zk, id: 'a2', site: 'site-a' })]
  for (const name of ['twice', 'destroyed', 'waiting']) {
    const res = await runCli(['disk', 'create', name, '--size', '4M', '--block-size', '1M', '--nodes', 'a1,a2'], { zk: zks })
    t.equal(res.code, 0, res.stderr)
  }
  const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
  t.teardown(async () => { await meta.close() })
  const pool = new NodePool(meta, { host: 'hv-test', site: 'site-a' })
  await pool.ready()
  t.teardown(async () => { await pool.close() })

  // A disk whose flush() and lease releases are counted (the injected counters).
  async function openCounted (name: string): Promise<{ disk: VirtualDisk, flushes: () => number, releases: () => number }> {
    const leases = new LeaseManager(meta, 'hv-test', { onHandoverRequested: () => {}, onLost: () => {} })
    let releases = 0
    const release = leases.release.bind(leases)
    leases.release = async (disk: string) => { releases++; await release(disk) }
    // Flush-behind off: these cases count the flushes of blocks still dirty at close and destroy.
    const disk = await VirtualDisk.open({ meta, pool, leases, ioRetryMs: IO_RETRY_MS, flushBehindMs: 0 }, name)
    let flushes = 0
    const flush = disk.flush.bind(disk)
    disk.flush = async () => { flushes++; await flush() }
    // close() flushes everywhere (syncing replicas too: dirty-flush.ts); counted the same.
    const everywhere = disk.flushEverywhere.bind(disk)
    disk.flushEverywhere = async () => { flushes++; await everywhere() }
    return { disk, flushes: () => flushes, releases: () => releases }
  }

  t.test('close() twice at once flushes once', async (t) => {
    const { disk, flushes, releases } = await openCounted('twice')
    // One flush of one rewritten block, alone: what it costs the nodes in fsync calls (the first
    // write of a block also fsyncs the new file's directory; this one only the file).
    await disk.write(0, Buffer.alloc(MiB, 1))
    await disk.flush()
    await disk.write(0, Buffer.alloc(MiB, 6))
    let before = await fsyncCounts(nodes)
    await disk.flush()
    const oneFlush = (await fsyncCounts(nodes)).map((n, i) => n - before[i])
    t.ok(oneFlush.every(d => d > 0), `one flush fsyncs on both nodes (${oneFlush.join(', ')} calls)`)

    await disk.write(0, Buffer.alloc(MiB, 2))
    before = await fsyncCounts(nodes)
    const flushesBefore = flushes()
    const a = disk.close()
    const b = disk.close()
    t.equal(a, b, 'the second close returns the first one\'s promise')
    t.equal(disk.closing, true)
    await Promise.all([a, b])
    t.equal(flushes() - flushesBefore, 1, 'flushed once')
    t.same((await fsyncCounts(nodes)).map((n, i) => n - before[i]), oneFlush, 'the nodes saw one flush')
    t.equal(releases(), 1, 'the lease was let go once')
    t.equal(disk.leaseEpoch, null)
    await disk.close()
    t.equal(flushes() - flushesBefore, 1, 'a later close flushes nothing more')
    t.equal((await meta.getLease('twice')), null, 'nobody holds the lease')
  })

  t.test('destroy() flushes nothing, lets the lease go, fails what comes after', async (t) => {
    const { disk, flushes, releases } = await openCounted('destroyed')
    await disk.write(0, Buffer.alloc(MiB, 3))
    const before = await fsyncCounts(nodes)
    const err = new Error('shutdown deadline')
    const d = disk.destroy(err)
    t.equal(disk.close(), d, 'close after destroy returns the destroy\'s promise')
    await d
    t.equal(flushes(), 0, 'no flush')
    t.same(await fsyncCounts(nodes), before, 'no fsync on the nodes')
    t.equal(releases(), 1, 'the lease was let go')
    t.equal((await meta.getLease('destroyed')), null, 'nobody holds the lease')
    await t.rejects(disk.write(0, Buffer.alloc(10)), err, 'a write after destroy fails with its error')
    await t.rejects(disk.flush(), err, 'an fsync after destroy fails: nothing vouches for the writes')
  })

  t.test('destroy() fails a write waiting for an unreachable replica at once', async (t) => {
    const { disk } = await openCounted('waiting')
    await disk.write(0, Buffer.alloc(MiB, 4))  // the lease is held, the nodes fenced
    await Promise.all(nodes.map(async n => { await n.kill('SIGKILL') }))
    const started = Date.now()
    const outcome = disk.write(MiB, Buffer.alloc(MiB, 5)).then(() => null, (e: unknown) => e)
    await new Promise(resolve => setTimeout(resolve, 1000))
    const err = new Error('destroyed while waiting')
    await disk.destroy(err)
    t.equal(await outcome, err, 'the waiting write failed with the destroy\'s error')
    const ms = Date.now() - started
    t.ok(ms < IO_RETRY_MS / 2, `and at once (${ms} ms), not after --io-retry-ms`)
  })
})
