// The placement-map owner (src/meta/disk-map.ts) against a real ZooKeeper: two owners of one
// disk's map (two sessions, as two processes) never overwrite each other's change (conditional
// multi-segment update, re-applied on a conflict), watches bring the other's change, stale
// marking never touches a block's last in-sync replica, and a map guarded by a fencing epoch
// commits nothing once a lease took a newer epoch.
import t from 'tap'
import { isUkaiError } from '../src/errors'
import { resizeDisk } from '../src/admin/disk-admin'
import { DiskMap } from '../src/meta/disk-map'
import { LeaseManager, takeFencingEpoch } from '../src/meta/lease'
import { PlacementSegment, ReplicaSet, segmentLayout, withState } from '../src/meta/placement'
import { DiskRecord } from '../src/meta/schema'
import { MetaStore } from '../src/meta/store'
import { startZk } from './helpers/cluster'
import { until } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

const SEGMENT_BLOCKS = 8
const BLOCKS = 20  // three segments: 8 + 8 + 4

async function makeDisk (meta: MetaStore, name: string): Promise<DiskRecord> {
  const rec: DiskRecord = {
    v: 1, name, uuid: `uuid-${name}`, sizeBytes: BLOCKS * 65536, blockSizeBytes: 65536, replicas: 2,
    placement: {}, tenant: 'default', parent: null, epoch: 1, segmentBlocks: SEGMENT_BLOCKS, createdAtMs: Date.now()
  }
  const set: ReplicaSet = [{ node: 'a', state: 'in-sync' }, { node: 'b', state: 'in-sync' }]
  await meta.createDisk(rec, segmentLayout(BLOCKS, SEGMENT_BLOCKS).map(s => new PlacementSegment(s.index, s.firstBlock, s.blockCount, set)))
  return rec
}

const key = (set: ReplicaSet): string => set.map(r => `${r.node}:${r.state}`).join(',')

t.test('DiskMap', async (t) => {
  const zk = await startZk(t)
  const m1 = await MetaStore.connect(zk.connectString, { auth: processZkAuth() })
  t.teardown(() => m1.close())
  const m2 = await MetaStore.connect(zk.connectString, { auth: processZkAuth() })
  t.teardown(() => m2.close())
  await m1.init()

  t.test('a conditional update that conflicts is re-applied on the fresh map; the other owner sees both', async (t) => {
    const rec = await makeDisk(m1, 'conflict')
    const one = await DiskMap.open(m1, rec)
    t.teardown(() => one.close())
    let changes = 0
    const two = await DiskMap.open(m2, rec)
    t.teardown(() => two.close())
    t.equal(two.blockCount(), BLOCKS)
    t.same([...two.nodesInMap()].sort(), ['a', 'b'])
    const watching = await DiskMap.open(m2, rec, { onChange: () => { changes++ } })
    t.teardown(() => watching.close())
    // `one` changes segments 0 and 2; `two` (closed: it follows no watches any more, so it
    // surely still holds their old versions) then changes segments 0 and 1: its first multi
    // conflicts and is applied again on what `one` wrote.
    two.close()
    t.equal(await one.update([1, 17], set => withState(set, 'a', 'stale')), 2)
    let calls = 0
    const n = await two.update([2, 9], (set) => { calls++; return [...set, { node: 'c', state: 'syncing' as const }] })
    t.equal(n, 2, 'both blocks changed')
    t.ok(calls >= 4, `the change was applied again after the conflict (${calls} calls)`)
    const fresh = await DiskMap.open(m1, rec)
    t.teardown(() => fresh.close())
    t.equal(key(fresh.replicasOf(1)), 'a:stale,b:in-sync', "the first owner's change is kept")
    t.equal(key(fresh.replicasOf(17)), 'a:stale,b:in-sync')
    t.equal(key(fresh.replicasOf(2)), 'a:in-sync,b:in-sync,c:syncing', "the second owner's change is there")
    t.equal(key(fresh.replicasOf(9)), 'a:in-sync,b:in-sync,c:syncing')
    t.equal(key(fresh.replicasOf(0)), 'a:in-sync,b:in-sync', 'other blocks untouched')
    await until('the watch to bring the first owner\'s change to the other session', async () => key(watching.replicasOf(17)) === 'a:stale,b:in-sync', 10_000, 50)
    await until('and the second\'s', async () => key(watching.replicasOf(9)) === 'a:in-sync,b:in-sync,c:syncing', 10_000, 50)
    await until('and the second\'s to the first', async () => key(one.replicasOf(9)) === 'a:in-sync,b:in-sync,c:syncing', 10_000, 50)
    t.ok(changes > 0, 'onChange was called')
    t.equal(await two.update([3], set => set), 0, 'an update that changes nothing writes nothing')
  })

  t.test('stale marking: per block, and a hung node for every block with another in-sync replica', async (t) => {
    const rec = await makeDisk(m1, 'stale')
    const map = await DiskMap.open(m1, rec)
    t.teardown(() => map.close())
    await map.markStale('b', [4, 5])
    t.equal(key(map.replicasOf(4)), 'a:in-sync,b:stale')
    t.equal(key(map.replicasOf(6)), 'a:in-sync,b:in-sync')
    await map.markStale('b', [4])  // already stale: nothing to write
    // Block 12 is in sync only on 'a': a hung 'a' keeps it there (its writes wait, then EIO) …
    await map.update([12], set => withState(set, 'b', 'stale'))
    await map.markHungNodeStale('a', [])
    t.equal(key(map.replicasOf(12)), 'a:in-sync,b:stale', 'the last in-sync replica of a block is not marked stale')
    t.equal(key(map.replicasOf(0)), 'a:stale,b:in-sync', 'every other block is left behind at once')
    t.equal(key(map.replicasOf(19)), 'a:stale,b:in-sync')
    t.equal(key(map.replicasOf(4)), 'a:in-sync,b:stale', 'a block whose only other replica is stale keeps it')
    // … unless the write that found it hung just missed that block.
    await map.markHungNodeStale('a', [12])
    t.equal(key(map.replicasOf(12)), 'a:stale,b:stale')
    const fresh = await DiskMap.open(m2, rec)
    t.teardown(() => fresh.close())
    for (let b = 0; b < BLOCKS; b++) t.equal(key(fresh.replicasOf(b)), key(map.replicasOf(b)), `block ${b} as committed`)
  })

  t.test('a map that follows its disk sees a grow (new segments, watched too)', async (t) => {
    await makeDisk(m1, 'grown')
    const map = await DiskMap.follow(m1, 'grown')
    t.teardown(() => map.close())
    t.equal(map.blockCount(), BLOCKS)
    await resizeDisk(m2, 'grown', 30 * 65536)
    await until('the grow to reach the map', async () => map.blockCount() === 30, 10_000, 50)
    t.equal(map.segmentCount, 4)
    t.equal(key(map.replicasOf(29)), 'a:in-sync,b:in-sync', 'new blocks placed like the last one')
    const other = await DiskMap.open(m2, await m2.getDisk('grown'))
    t.teardown(() => other.close())
    await other.markStale('b', [29])
    await until('a change in a new segment to reach it', async () => key(map.replicasOf(29)) === 'a:in-sync,b:stale', 10_000, 50)
  })

  t.test('a map guarded by a fencing epoch commits nothing once a lease took a newer epoch', async (t) => {
    const rec = await makeDisk(m1, 'fenced')
    const before = await m1.fenceVersion('fenced')
    const fencing = await takeFencingEpoch(m1, 'fenced')
    if (fencing === null) { t.fail('no fencing epoch with nobody holding the lease'); return }
    t.equal(fencing.leaseEpoch, 1, 'the fence epoch moved up by one')
    t.equal(fencing.fenceVersion, before + 1)
    t.equal(await m1.leaseHeldAnywhere('fenced'), false, 'and no lease was taken')
    const map = await DiskMap.open(m1, rec, { fenceVersion: fencing.fenceVersion })
    t.teardown(() => map.close())
    t.equal(await map.update([0], set => withState(set, 'a', 'stale')), 1, 'changes commit while the fence holds our epoch')
    // A writer appears: it takes the lease at once (nobody to hand over from), moving the fence.
    const leases = new LeaseManager(m2, 'writer', { onHandoverRequested: () => {}, onLost: () => {} })
    const lease = await leases.acquire('fenced')
    t.equal(lease.leaseEpoch, 2, 'the writer holds a newer epoch')
    t.equal(await takeFencingEpoch(m1, 'fenced'), null, 'no fencing epoch while a lease is held')
    const err = await map.update([1], set => withState(set, 'a', 'stale')).catch(e => e)
    t.ok(isUkaiError(err, 'FENCED'), `the guarded update fails FENCED (${String(err)})`)
    const fresh = await DiskMap.open(m2, rec)
    t.teardown(() => fresh.close())
    t.equal(key(fresh.replicasOf(1)), 'a:in-sync,b:in-sync', 'and wrote nothing')
    t.equal(key(fresh.replicasOf(0)), 'a:stale,b:in-sync')
    // An unguarded owner (the lease holder's disk engine) is not affected.
    t.equal(await fresh.update([1], set => withState(set, 'b', 'stale')), 1)
    await leases.release('fenced')
  })
})
