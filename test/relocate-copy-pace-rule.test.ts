// The pace rule of a running copy (src/relocate/copy-pace.ts) on its own: which reports count as
// congestion against the idle baseline, the AIMD steps between the floor and the ceiling, and
// where a resumed copy starts (the pace its earlier run saved in the record).
// test/relocate-copy-pace.test.ts runs it for real (a repair, a slow node, real processes).
import t from 'tap'
import { CopyPace, PaceRule, resumedPace } from '../src/relocate/copy-pace'
import { ClusterConfig, DEFAULT_CONFIG, RelocationRecord, RttReport, checkRelocationRecord } from '../src/meta/schema'
import { silentLogger } from '../src/log'

const report = (host: string, atMs: number, writeP99Ms: Record<string, number>, rttMs: Record<string, number> = {}): RttReport =>
  ({ v: 1, host, site: 's', measuredAtMs: atMs, rttMs, writeP99Ms })

t.test('congestion: a rise over the idle baseline, twice in a row', async (t) => {
  const rule = new PaceRule()
  const nodes = ['a1', 'b1']
  let r = rule.observe([report('hv1', 1000, { a1: 2, b1: 40 })], nodes, 1000, 10)
  t.same([r.fresh, r.over, r.worst], [true, false, null], 'the first report sets the baselines')
  r = rule.observe([report('hv1', 1000, { a1: 50 })], nodes, 1500, 10)
  t.equal(r.fresh, false, 'a report seen before is not looked at again')
  r = rule.observe([report('hv1', 2000, { a1: 30, b1: 49 })], nodes, 2000, 10)
  t.same([r.over, r.worst], [true, null], 'a1 at 15x its idle value: over once, not yet congested; b1 +9 ms over a 40 ms WAN baseline is not a rise')
  r = rule.observe([report('hv1', 3000, { a1: 38, b1: 41 })], nodes, 3000, 10)
  t.same(r.worst, { node: 'a1', host: 'hv1', kind: 'write p99', ms: 38, baselineMs: 2 }, 'twice in a row: congested')
  r = rule.observe([report('hv1', 4000, { a1: 3 })], nodes, 4000, 10)
  t.same([r.over, r.worst], [false, null], 'back to idle')
  r = rule.observe([report('hv1', 5000, { a1: 30 }), report('hv2', 5000, {}, { a1: 0.5 })], nodes, 5000, 10)
  t.same([r.over, r.worst], [true, null], 'after a good report the count starts again; a host without writes offers its ping')
  r = rule.observe([report('hv1', 6000, { a1: 30 })], nodes, 6000, 0)
  t.same([r.over, r.worst], [false, null], 'rise 0: pacing off')
  r = rule.observe([report('hv1', 7000, { a1: 500 })], nodes, 7000 + 11_000, 10)
  t.equal(r.fresh, false, 'a report older than 10 s is ignored (the agent went away)')
})

t.test('the idle baseline the agent saw before the copy began counts', async (t) => {
  const rule = new PaceRule()
  const loaded = (atMs: number): RttReport => ({ ...report('hv1', atMs, { a1: 30 }), writeIdleP99Ms: { a1: 2 } })
  let r = rule.observe([loaded(1000)], ['a1'], 1000, 10)
  t.equal(r.over, true, 'a copy loading a1 from its first block on is a rise over the 5 minutes before')
  r = rule.observe([loaded(2000)], ['a1'], 2000, 10)
  t.same(r.worst, { node: 'a1', host: 'hv1', kind: 'write p99', ms: 30, baselineMs: 2 })
})

// A source the test drives on a clock of its own: next() is one second later and one report of
// hv1 with that write p99 of a1.
// idleP99: the agent's idle p99 of the 5 minutes before, as a real agent reports it.
function fakeSource (config: Partial<ClusterConfig>): { source: { listRtts: () => Promise<RttReport[]>, config: () => Promise<ClusterConfig> }, next: (p99: number, idleP99?: number) => void, nowMs: () => number } {
  let clockMs = 1_000_000
  let reports: RttReport[] = []
  return {
    source: { listRtts: async () => reports, config: async () => ({ ...DEFAULT_CONFIG, ...config }) },
    next: (p99, idleP99) => { clockMs += 1000; reports = [{ ...report('hv1', clockMs, { a1: p99 }), ...(idleP99 !== undefined ? { writeIdleP99Ms: { a1: idleP99 } } : {}) }] },
    nowMs: () => clockMs
  }
}

t.test('AIMD between the floor and the configured rate', async (t) => {
  const { source, next, nowMs } = fakeSource({ copyPaceRiseMs: 10, copyPaceFloorBytesPerSec: 1_000_000 })
  let changes = 0
  const pace = new CopyPace({ source, ceilingBytesPerSec: 8_000_000, nodes: () => ['a1'], log: silentLogger, onChange: () => { changes++ }, nowMs })
  const step = async (p99: number): Promise<number | null> => { next(p99); await pace.step(); return pace.current?.bytesPerSec ?? null }
  t.equal(await step(2), null, 'idle: at its rate')
  t.equal(await step(40), null, 'one slow report: held')
  t.equal(await step(40), 4_000_000, 'two: halved from the configured rate')
  t.match(pace.current?.why, /^node a1 write p99 40 ms \(idle 2 ms, seen from hv1\)$/, 'and says why')
  t.equal(await step(40), 2_000_000)
  t.equal(await step(40), 1_000_000)
  t.equal(await step(40), 1_000_000, 'never below the floor')
  t.equal(await step(30), 1_000_000, 'still slow: held')
  t.equal(await step(3), 2_000_000, 'fine: an eighth of the rate back')
  t.match(pace.current?.why, /^recovering, was: node a1/)
  t.equal(await step(25), 2_000_000, 'a node over the threshold once: held, not raised')
  for (let i = 0; i < 5; i++) await step(3)
  t.equal(pace.current?.bytesPerSec, 7_000_000)
  t.equal(await step(3), null, 'back at the configured rate: the pace is lifted, never above it')
  t.ok(changes >= 8, `every change told (${changes})`)
})

t.test('a floor above the configured rate is the rate; no rate: halved from what it moved', async (t) => {
  const slowRate = fakeSource({ copyPaceFloorBytesPerSec: 4_000_000 })
  const capped = new CopyPace({ source: slowRate.source, ceilingBytesPerSec: 1_000_000, nodes: () => ['a1'], log: silentLogger, nowMs: slowRate.nowMs })
  for (const p99 of [2, 40, 40]) { slowRate.next(p99); await capped.step() }
  t.equal(capped.current?.bytesPerSec, 1_000_000, 'never above --rate, even at the floor')

  const free = fakeSource({ copyPaceFloorBytesPerSec: 1_000_000 })
  const unlimited = new CopyPace({ source: free.source, ceilingBytesPerSec: 0, nodes: () => ['a1'], log: silentLogger, nowMs: free.nowMs })
  for (const p99 of [2, 40, 40]) { await unlimited.copied(16_000_000); free.next(p99); await unlimited.step() }
  t.equal(unlimited.current?.bytesPerSec, 8_000_000, 'halved from the 16 MB/s it moved')
  for (let i = 0; i < 7; i++) { free.next(2); await unlimited.step() }
  t.equal(unlimited.current, null, 'lifted once back at the fastest it moved unpaced (an eighth of it a step)')
})

t.test('a copy waiting out its debt stops at once when aborted', async (t) => {
  const { source, nowMs } = fakeSource({})
  const pace = new CopyPace({ source, ceilingBytesPerSec: 100, nodes: () => ['a1'], log: silentLogger, nowMs })
  const waiting = pace.copied(1000)  // 10 s of debt to wait off
  const t0 = Date.now()
  setTimeout(() => pace.abort(new Error('the lease moved')), 50)
  await t.rejects(waiting, /the lease moved/)
  t.ok(Date.now() - t0 < 2000, `stopped after ${Date.now() - t0} ms, not the 10 s of debt`)
})

t.test('a resumed copy starts at the pace its earlier run learned, then steps as usual', async (t) => {
  const saved = { bytesPerSec: 1_000_000, why: 'recovering, was: node a1 write p99 40 ms (idle 2 ms, seen from hv1)', sinceMs: 5 }
  const r = resumedPace(saved, 8_000_000)
  t.same(r.pace, { bytesPerSec: 1_000_000, why: 'resumed, was: node a1 write p99 40 ms (idle 2 ms, seen from hv1)', sinceMs: 5 }, 'min(rate, saved), saying it resumed')
  t.match(r.note, /starts at the pace an earlier run had learned: 1(\.00)? MB\/s/)
  t.equal(resumedPace(saved, 500_000).pace, null, 'a saved pace not below the record\'s rate: at the rate')
  t.match(resumedPace(undefined, 8_000_000).note, /no pace saved by an earlier run: starts at its rate/, 'none saved: at the rate, said so')
  t.match(resumedPace({ ...saved, bytesPerSec: 3 }, 8_000_000), { pace: null, note: /below any floor.*ignored/ }, 'a nonsense pace is ignored, said so')
  t.match(resumedPace({ ...saved, bytesPerSec: Number.NaN }, 8_000_000), { pace: null }, 'NaN too')
  t.same(resumedPace({ ...saved, topBytesPerSec: 16_000_000 }, 0).pace?.topBytesPerSec, 16_000_000, 'no rate: what it climbs back to comes along')

  const { source, next, nowMs } = fakeSource({ copyPaceRiseMs: 10, copyPaceFloorBytesPerSec: 500_000 })
  const pace = new CopyPace({ source, ceilingBytesPerSec: 8_000_000, resumed: r.pace, nodes: () => ['a1'], log: silentLogger, nowMs })
  t.equal(pace.current?.bytesPerSec, 1_000_000, 'before any report: the saved pace, not the rate')
  next(40, 2); await pace.step()
  t.equal(pace.current?.bytesPerSec, 1_000_000, 'a first slow report (over the agent\'s idle p99): held there')
  next(40, 2); await pace.step()
  t.equal(pace.current?.bytesPerSec, 500_000, 'the second: halved from it')
  next(2, 2); await pace.step()
  t.equal(pace.current?.bytesPerSec, 1_500_000, 'fine: an eighth of the rate back, as usual')
})

t.test('a damaged pace in a record is dropped with a reason, the record kept', async (t) => {
  const rec: RelocationRecord = {
    v: 1, id: 'x', disk: 'd', targetNodes: ['a1'], dropNodes: [], addedNodes: [], rateBytesPerSec: 0, state: 'copying', reason: '', executor: '',
    plan: { blocks: 1, writtenBlocks: 1, bytes: 1 }, progress: { blocks: 0, bytes: 0, updatedAtMs: 0 }, createdAtMs: 0, finishedAtMs: 0
  }
  for (const pace of ['fast', { bytesPerSec: -1, why: '', sinceMs: 0 }, { bytesPerSec: 1e6, why: 'x', sinceMs: 0, topBytesPerSec: 'lots' }]) {
    const why: string[] = []
    const got = checkRelocationRecord({ ...rec, pace } as unknown as RelocationRecord, 'd', w => why.push(w))
    t.equal(got.pace, undefined, `dropped: ${JSON.stringify(pace)}`)
    t.match(why, [/^pace .* is not \{ bytesPerSec, why, sinceMs/], 'with a reason')
    t.equal(got.id, 'x', 'the rest kept')
  }
  const good = { bytesPerSec: 1e6, why: 'x', sinceMs: 0 }
  t.same(checkRelocationRecord({ ...rec, pace: good }, 'd', () => t.fail('nothing ignored')).pace, good, 'a sound pace is kept')
})
