// Placement map: in-memory segments and their run-length encoded form in ZooKeeper.
import t from 'tap'
import { PlacementSegment, segmentLayout, withState } from '../src/meta/placement'
import { decodeSegment, encodeSegment } from '../src/meta/segment-codec'

const AB = [{ node: 'a1', state: 'in-sync' as const }, { node: 'a2', state: 'in-sync' as const }]

t.test('a freshly placed segment is one run and tiny', async (t) => {
  const seg = new PlacementSegment(3, 3 * 16384, 16384, AB)
  t.equal(seg.runs().length, 1)
  const bytes = encodeSegment(seg)
  t.ok(bytes.length < 64, `encoded in ${bytes.length} bytes`)
  const back = decodeSegment(3, bytes)
  t.equal(back.firstBlock, 3 * 16384)
  t.same(back.replicas(3 * 16384 + 100), AB)
})

t.test('marking one block stale splits the run; round trip keeps every block', async (t) => {
  const seg = new PlacementSegment(0, 0, 1000, AB)
  seg.setReplicas(500, withState(seg.replicas(500), 'a2', 'stale'))
  t.same(seg.runs().map(r => r.length), [500, 1, 499])
  const back = decodeSegment(0, encodeSegment(seg))
  const mismatched = []
  for (let b = 0; b < 1000; b++) if (JSON.stringify(back.replicas(b)) !== JSON.stringify(seg.replicas(b))) mismatched.push(b)
  t.same(mismatched, [], 'every block decodes to the replicas it was encoded with')
  t.equal(back.replicas(500)[1].state, 'stale')
})

// Worst case for a disk spread over 12 nodes: no two neighbouring blocks share a replica set.
t.test('worst case: every block placed differently stays within the ZooKeeper budget', async (t) => {
  const seg = new PlacementSegment(0, 0, 16384, AB)
  for (let b = 0; b < 16384; b++) seg.setReplicas(b, [{ node: `n${b % 7}`, state: 'in-sync' }, { node: `m${b % 5}`, state: b % 2 === 0 ? 'syncing' : 'stale' }])
  const bytes = encodeSegment(seg)
  // 1 TiB of 4 MiB blocks is 16 such segments: about a megabyte in the worst case.
  t.ok(bytes.length * 16 < 1.1 * 1024 * 1024, `worst-case segment ${bytes.length} bytes`)
  t.same(decodeSegment(0, bytes).runs(), seg.runs())
})

t.test('a corrupted segment is refused, not misread', async (t) => {
  const bytes = encodeSegment(new PlacementSegment(0, 0, 10, AB))
  const bad = Buffer.from(bytes)
  bad[bad.length - 6] ^= 0xff
  t.throws(() => decodeSegment(0, bad), { code: 'INTERNAL', message: /checksum/ })
  t.throws(() => decodeSegment(0, bytes.subarray(0, 5)), { code: 'INTERNAL' })
})

t.test('segment layout covers every block exactly once', async (t) => {
  const layout = segmentLayout(40000, 16384)
  t.same(layout.map(s => [s.firstBlock, s.blockCount]), [[0, 16384], [16384, 16384], [32768, 7232]])
  t.same(segmentLayout(0, 16384), [])
})
