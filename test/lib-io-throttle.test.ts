// The token bucket and the QoS throttle (src/lib/io-throttle.ts) driven by a hand-moved clock:
// the rate holds exactly, bursts are bounded, a request larger than the bucket passes (and the
// debt is waited off), requests leave in arrival order, a limit change applies to requests
// already waiting, and abort fails them. Plus the record → limits mapping and the CLI's checks
// on a change (src/admin/disk-qos.ts).
import t from 'tap'
import { IoThrottle, ThrottleClock, ThrottleLimits, TokenBucket } from '../src/lib/io-throttle'
import { limitsOfRecord, throttleLimitsOf } from '../src/vdisk/disk-qos'
import { silentLogger } from '../src/log'
import { formatQos, withQosChange } from '../src/admin/disk-qos'
import { DiskRecord } from '../src/meta/schema'

class FakeClock implements ThrottleClock {
  now = 0
  private pending: Array<{ at: number, fn: () => void, id: number }> = []
  private nextId = 1
  nowMs = (): number => this.now
  timers = {
    setTimeout: (fn: () => void, ms: number): unknown => { const id = this.nextId++; this.pending.push({ at: this.now + ms, fn, id }); return id },
    clearTimeout: (h: unknown): void => { this.pending = this.pending.filter(p => p.id !== h) }
  }

  // Moves time forward in 1 ms steps, firing due timers.
  async advance (ms: number): Promise<void> {
    const end = this.now + ms
    while (this.now < end) {
      this.now++
      await flushMicrotasks()
      for (;;) {
        const due = this.pending.filter(p => p.at <= this.now)
        if (due.length === 0) break
        this.pending = this.pending.filter(p => p.at > this.now)
        for (const d of due) d.fn()
        await flushMicrotasks()
      }
    }
    await flushMicrotasks()
  }

  get timersPending (): number { return this.pending.length }
}

// A macrotask turn: every promise chain started before it has run as far as it can.
async function flushMicrotasks (): Promise<void> { await new Promise<void>(resolve => setImmediate(resolve)) }

const limits = (l: Partial<ThrottleLimits>): ThrottleLimits => ({ opsPerSec: 0, bytesPerSec: 0, burstOps: 0, burstBytes: 0, ...l })

// Issues requests back to back (one outstanding, like fio with iodepth 1) for `ms` of fake time;
// returns how many passed.
async function closedLoop (clock: FakeClock, th: IoThrottle, bytes: number, ms: number): Promise<number> {
  let passed = 0
  let stop = false
  const loop = (async () => {
    while (!stop) {
      const w = th.admit(bytes)
      if (w !== undefined) await w
      if (stop) break
      passed++
      await Promise.resolve()
    }
  })()
  await clock.advance(ms)
  stop = true
  await clock.advance(1000) // let the last waiter through
  await loop
  return passed
}

t.test('token bucket: refills at the rate, caps at capacity, goes into debt for a large request', async (t) => {
  const b = new TokenBucket(100, 10, 0)
  t.equal(b.tokens(0), 10, 'starts full')
  t.equal(b.waitMs(5, 0), 0, 'a request within the level waits nothing')
  b.take(10, 0)
  t.equal(b.waitMs(1, 0), 10, 'empty: one token takes 10 ms at 100/s')
  t.equal(b.tokens(1000), 10, 'refill stops at capacity')
  t.equal(b.waitMs(50, 1000), 0, 'a request larger than the bucket passes once the bucket is full')
  b.take(50, 1000)
  t.equal(b.tokens(1000), -40, 'and leaves a debt')
  t.equal(b.waitMs(1, 1000), 410, 'which is waited off before the next request')
  b.setLimits(1000, 10, 1000)
  t.equal(b.waitMs(1, 1000), 41, 'a new rate applies to the debt at once')
})

t.test('unlimited: every request passes at once, with no promise and no timer', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({}), clock)
  let immediate = 0
  for (let i = 0; i < 1000; i++) if (th.admit(1 << 20) === undefined) immediate++
  t.equal(immediate, 1000)
  t.equal(clock.timersPending, 0)
})

t.test('IOPS cap: a closed loop gets exactly the rate after the burst', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ opsPerSec: 200, burstOps: 200 }), clock)
  const passed = await closedLoop(clock, th, 4096, 10_000)
  // 200 of burst + 200/s × 10 s (± the request in flight at each end)
  t.ok(passed >= 2198 && passed <= 2202, `passed ${passed} in 10 s at 200 IOPS with a burst of 200`)
})

t.test('bytes cap: large requests, a request larger than the burst still passes, the rate holds', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ bytesPerSec: 1_000_000, burstBytes: 100_000 }), clock)
  const passed = await closedLoop(clock, th, 250_000, 10_000)
  // 10 s × 1 MB/s = 10 MB = 40 requests of 250 kB; the first passes on the full (smaller) bucket.
  t.ok(passed >= 40 && passed <= 42, `passed ${passed} requests of 250 kB in 10 s at 1 MB/s (burst 100 kB)`)
})

t.test('both caps: the tighter one rules', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ opsPerSec: 1000, burstOps: 1, bytesPerSec: 409_600, burstBytes: 4096 }), clock)
  const passed = await closedLoop(clock, th, 4096, 5000)
  t.ok(passed >= 500 && passed <= 502, `passed ${passed} in 5 s: 100/s of 4 KiB from the bytes cap, not 1000/s`)
})

t.test('waiting requests leave in arrival order; a big one is not overtaken by small ones', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ bytesPerSec: 1000, burstBytes: 1000 }), clock)
  t.equal(th.admit(1000), undefined, 'the burst passes at once')
  const order: string[] = []
  const big = th.admit(5000)
  t.ok(big !== undefined)
  big?.then(() => order.push('big'), () => {})
  for (let i = 0; i < 3; i++) th.admit(10)?.then(() => order.push(`small${i}`), () => {})
  await clock.advance(999)
  t.same(order, [], 'nothing before the bucket refilled')
  await clock.advance(2)
  t.same(order, ['big'], 'the big one first, once the bucket is full again')
  await clock.advance(4000)
  t.same(order, ['big'], 'the small ones wait off its debt')
  await clock.advance(100)
  t.same(order, ['big', 'small0', 'small1', 'small2'])
})

t.test('a limit change applies to requests already waiting, and lifting it frees them', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ opsPerSec: 1, burstOps: 1 }), clock)
  t.equal(th.admit(0), undefined)
  let done = 0
  for (let i = 0; i < 10; i++) void th.admit(0)?.then(() => { done++ })
  await clock.advance(10)
  t.equal(done, 0, 'at 1/s nothing passes within 10 ms')
  th.setLimits(limits({ opsPerSec: 1000, burstOps: 1 }))
  await clock.advance(5)
  t.ok(done >= 4 && done <= 6, `at 1000/s about 5 pass in 5 ms (${done})`)
  th.setLimits(limits({}))
  await clock.advance(1)
  t.equal(done, 10, 'unlimited: the rest pass at once')
  t.equal(th.waiting, 0)
})

t.test('abort fails waiting and later requests', async (t) => {
  const clock = new FakeClock()
  const th = new IoThrottle(limits({ opsPerSec: 1, burstOps: 1 }), clock)
  th.admit(0)
  const waiting = th.admit(0)
  const err = new Error('destroyed')
  th.abort(err)
  await t.rejects(waiting as Promise<void>, err)
  await t.rejects(th.admit(0) as Promise<void>, err)
  t.equal(clock.timersPending, 0, 'no timer left behind')
})

const rec: DiskRecord = {
  v: 1, name: 'd', uuid: 'u', sizeBytes: 0, blockSizeBytes: 65536, replicas: 1, placement: {}, tenant: 'default', parent: null, epoch: 1, segmentBlocks: 16, createdAtMs: 0
}

t.test('record qos → limits: burst defaults to 1 s of the rate, --burst scales it, absolutes win', async (t) => {
  t.same(throttleLimitsOf(null), limits({}))
  t.same(throttleLimitsOf({ v: 1, iops: 200, bytesPerSec: 0 }), limits({ opsPerSec: 200, burstOps: 200 }))
  t.same(throttleLimitsOf({ v: 1, iops: 200, bytesPerSec: 5e6, burstSeconds: 2 }), limits({ opsPerSec: 200, burstOps: 400, bytesPerSec: 5e6, burstBytes: 1e7 }))
  t.same(throttleLimitsOf({ v: 1, iops: 200, bytesPerSec: 5e6, burstIops: 7 }), limits({ opsPerSec: 200, burstOps: 7, bytesPerSec: 5e6, burstBytes: 5e6 }))
  t.equal(formatQos({ v: 1, iops: 200, bytesPerSec: 5e6 }), '200 IOPS (burst 200), 5.00 MB/s (burst 5.00 MB)')
  t.match(formatQos({ v: 2, iops: 1, bytesPerSec: 0 } as any), /not understood \(format version 2\)/)
})

t.test('a qos of a format version this ukai does not read keeps the previous limits', async (t) => {
  const previous = limits({ opsPerSec: 300, burstOps: 300 })
  t.same(limitsOfRecord({ ...rec, qos: { v: 1, iops: 200, bytesPerSec: 0 } }, previous, silentLogger), limits({ opsPerSec: 200, burstOps: 200 }))
  t.same(limitsOfRecord({ ...rec, qos: { v: 2, iops: 5, bytesPerSec: 0 } as any }, previous, silentLogger), previous, 'v2: unchanged, not guessed')
  t.same(limitsOfRecord(rec, previous, silentLogger), limits({}), 'no qos: unlimited')
})

t.test('a change merges, 0 lifts one limit, clear lifts all, bad values name the flag', async (t) => {
  const a = withQosChange(rec, { iops: 200 })
  t.same(a.qos, { v: 1, iops: 200, bytesPerSec: 0 })
  const b = withQosChange(a, { bytesPerSec: 5e6, burstSeconds: 2 })
  t.same(b.qos, { v: 1, iops: 200, bytesPerSec: 5e6, burstSeconds: 2 })
  const c = withQosChange(b, { burstIops: 50 })
  t.same(c.qos, { v: 1, iops: 200, bytesPerSec: 5e6, burstIops: 50 }, 'an absolute burst replaces --burst')
  t.same(withQosChange(c, { iops: 0 }).qos, { v: 1, iops: 0, bytesPerSec: 5e6 }, '--iops 0 lifts the IOPS cap and its burst')
  t.equal(withQosChange(c, { iops: 0, bytesPerSec: 0 }).qos, undefined, 'nothing limited: no qos at all')
  t.equal(withQosChange(c, { clear: true }).qos, undefined)
  const bad: Array<[Parameters<typeof withQosChange>[1], RegExp]> = [
    [{ iops: -1 }, /bad --iops -1/],
    [{ iops: 1.5 }, /bad --iops 1.5/],
    [{ iops: 1e9 }, /bad --iops/],
    [{ bytesPerSec: 2e12 }, /bad --mbps 2000000/],
    [{ bytesPerSec: NaN }, /bad --mbps/],
    [{ burstIops: 0, iops: 5 }, /bad --burst-iops 0/],
    [{ burstBytes: 0.5, bytesPerSec: 1e6 }, /bad --burst-mb/],
    [{ burstSeconds: 0, iops: 5 }, /bad --burst 0/],
    [{ burstSeconds: 1, burstIops: 3, iops: 5 }, /either --burst SECONDS or --burst-iops/],
    [{ burstIops: 5 }, /--burst-iops needs an IOPS limit/],
    [{ burstBytes: 5e6 }, /--burst-mb needs an MB\/s limit/],
    [{ clear: true, iops: 5 }, /--clear lifts every limit: give it alone/],
    [{}, /nothing to change/]
  ]
  for (const [change, msg] of bad) t.throws(() => withQosChange(rec, change), { code: 'BAD_ARGUMENT', message: msg }, JSON.stringify(change))
})
