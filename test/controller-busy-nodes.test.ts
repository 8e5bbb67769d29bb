// Latency-aware repair's signal (src/controller/busy-nodes.ts): a node is busy when even the
// nearest agent's fresh round trip to it is at or over the threshold; far sites' WAN round trips,
// stale reports and unmeasured nodes never make it busy; 0 turns the check off. And
// `ukai controller --repair-busy-rtt-ms` refuses a bad value before starting.
import t from 'tap'
import { busyNodes } from '../src/controller/busy-nodes'
import type { RttReport } from '../src/meta/schema'
import { runCli } from './helpers/cli'

const now = 1_000_000
const report = (host: string, rttMs: Record<string, number>, ageMs = 1000): RttReport => ({ v: 1, host, site: 's', measuredAtMs: now - ageMs, rttMs })

t.test('busy: the nearest fresh view is slow', async t => {
  const reports = [report('hv-a', { a1: 150, a2: 0.4, b1: 40 }), report('hv-b', { a1: 180, a2: 35, b1: 0.5 })]
  t.same(busyNodes(reports, ['a1', 'a2', 'b1'], { nowMs: now, thresholdMs: 100 }), [{ node: 'a1', rttMs: 150 }], 'only a1: every host finds it slow')
  t.same(busyNodes(reports, ['a2', 'b1'], { nowMs: now, thresholdMs: 30 }), [], 'a far site\'s 35–40 ms round trip is not busy: the nearest host sees 0.5 ms')
  t.same(busyNodes(reports, ['a1'], { nowMs: now, thresholdMs: 150 }), [{ node: 'a1', rttMs: 150 }], 'at the threshold counts')
  t.same(busyNodes(reports, ['a1'], { nowMs: now, thresholdMs: 0 }), [], '0: off')
})

t.test('stale reports and unmeasured nodes are not busy', async t => {
  const reports = [report('hv-a', { a1: 500 }, 60_000), report('hv-b', { a2: 500 })]
  t.same(busyNodes(reports, ['a1', 'a3'], { nowMs: now, thresholdMs: 100 }), [], 'a1 measured only long ago, a3 never')
  t.same(busyNodes(reports, ['a2'], { nowMs: now, thresholdMs: 100 }), [{ node: 'a2', rttMs: 500 }])
  t.same(busyNodes([report('hv-a', { a1: Number.NaN })], ['a1'], { nowMs: now, thresholdMs: 1 }), [], 'a non-number is no measurement')
})

t.test('ukai controller --repair-busy-rtt-ms: a bad value is refused', async t => {
  const r = await runCli(['controller', '--zk', '127.0.0.1:1', '--repair-busy-rtt-ms', 'soon'], { zk: '127.0.0.1:1' })
  t.not(r.code, 0, 'non-zero exit')
  t.match(r.stderr, /bad --repair-busy-rtt-ms 'soon'/, 'naming the option and the value')
})
