// The repair duty's start gate (src/controller/busy-nodes.ts): a node is busy when some agent's
// fresh write p99 to it is over its idle p99 by the copy pace's rule (copy-pace.ts overIdle: at
// least the rise above it and at least twice it), said as the running copy says it; only a node
// no agent writes to falls back to the nearest agent's ping against an absolute threshold, and
// says so; far sites' WAN round trips, stale reports and unmeasured nodes never make it busy.
// And `ukai controller --repair-busy-rtt-ms` refuses a bad value before starting.
import t from 'tap'
import { busyNodes } from '../src/controller/busy-nodes'
import type { RttReport } from '../src/meta/schema'
import { runCli } from './helpers/cli'

const now = 1_000_000
const report = (host: string, rttMs: Record<string, number>, ageMs = 1000, writes?: { p99: Record<string, number>, idle: Record<string, number> }): RttReport =>
  ({ v: 1, host, site: 's', measuredAtMs: now - ageMs, rttMs, ...(writes !== undefined ? { writeP99Ms: writes.p99, writeIdleP99Ms: writes.idle } : {}) })
const opts = { nowMs: now, riseMs: 10, pingThresholdMs: 100 }

t.test('busy: an agent\'s write p99 over its idle value, by the copy pace\'s rule', async t => {
  const reports = [
    report('hv-a', { a1: 0.3, a2: 0.4 }, 1000, { p99: { a1: 83, a2: 3 }, idle: { a1: 1.2, a2: 2 } }),
    report('hv-b', { a1: 0.5, b1: 0.5 }, 1000, { p99: { a1: 20, b1: 70 }, idle: { a1: 15, b1: 45 } })
  ]
  t.same(busyNodes(reports, ['a1', 'a2', 'b1'], opts), [{ node: 'a1', why: 'node a1 write p99 83 ms (idle 1.2 ms, seen from hv-a)' }],
    'a1: hv-a sees it 69× its idle value (hv-b\'s view does not hide it); a2 +1 ms; b1 +25 ms but not twice its 45 ms idle (a far site)')
  t.same(busyNodes(reports, ['a1'], { ...opts, riseMs: 90 }), [], 'a rise below the setting is not busy')
  t.same(busyNodes(reports, ['a1'], { ...opts, riseMs: 0 }), [], 'rise 0: writes never make a node busy')
  t.same(busyNodes(reports, ['a1'], { ...opts, pingThresholdMs: 0.1 }), [{ node: 'a1', why: 'node a1 write p99 83 ms (idle 1.2 ms, seen from hv-a)' }], 'pings are not looked at where agents write (0.3 ms ≥ 0.1 ms would be)')
  const noIdle = [report('hv-a', {}, 1000, { p99: { a1: 500 }, idle: {} })]
  t.same(busyNodes(noIdle, ['a1'], opts), [], 'no idle value (an agent without one): the p99 is its own baseline, never a rise')
})

t.test('the ping decides only where no agent writes, and says so', async t => {
  const reports = [report('hv-a', { a1: 150, a2: 0.4, b1: 40 }), report('hv-b', { a1: 180, a2: 35, b1: 0.5 })]
  t.same(busyNodes(reports, ['a1', 'a2', 'b1'], opts), [{ node: 'a1', why: 'node a1 ping 150 ms (≥ 100 ms; no agent writes to it)' }], 'only a1: every host finds it slow')
  t.same(busyNodes(reports, ['a2', 'b1'], { ...opts, pingThresholdMs: 30 }), [], 'a far site\'s 35–40 ms round trip is not busy: the nearest host sees 0.5 ms')
  t.same(busyNodes(reports, ['a1'], { ...opts, pingThresholdMs: 150 }).map(b => b.node), ['a1'], 'at the threshold counts')
  t.same(busyNodes(reports, ['a1'], { ...opts, pingThresholdMs: 0 }), [], '0: pings off')
  const mixed = [report('hv-a', { a1: 150 }), report('hv-b', { a1: 160 }, 1000, { p99: { a1: 2 }, idle: { a1: 1.5 } })]
  t.same(busyNodes(mixed, ['a1'], opts), [], 'one agent writing to a1 at its idle p99 outweighs slow pings')
})

t.test('stale reports and unmeasured nodes are not busy', async t => {
  const reports = [report('hv-a', { a1: 500 }, 60_000, { p99: { a1: 500 }, idle: { a1: 1 } }), report('hv-b', { a2: 500 })]
  t.same(busyNodes(reports, ['a1', 'a3'], opts), [], 'a1 measured only long ago, a3 never')
  t.same(busyNodes(reports, ['a2'], opts).map(b => b.node), ['a2'])
  t.same(busyNodes([report('hv-a', { a1: Number.NaN })], ['a1'], { ...opts, pingThresholdMs: 1 }), [], 'a non-number is no measurement')
})

t.test('ukai controller --repair-busy-rtt-ms: a bad value is refused', async t => {
  const r = await runCli(['controller', '--zk', '127.0.0.1:1', '--repair-busy-rtt-ms', 'soon'], { zk: '127.0.0.1:1' })
  t.not(r.code, 0, 'non-zero exit')
  t.match(r.stderr, /bad --repair-busy-rtt-ms 'soon'/, 'naming the option and the value')
})
