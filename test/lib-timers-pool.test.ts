// src/lib/timers.ts and src/lib/worker-pool.ts in process: sleep with a signal and a fake clock,
// and forEachBounded's bound, order and first-failure rule (no call starts after it, the calls in
// flight finish before it is thrown).
import t from 'tap'
import { sleep, useTimers } from '../src/lib/timers'
import { forEachBounded } from '../src/lib/worker-pool'

t.test('sleep: waits, rejects with the abort reason, goes through the swappable clock', async (t) => {
  await sleep(1)
  const ac = new AbortController()
  const pending = sleep(60_000, { signal: ac.signal })
  ac.abort(new Error('stop'))
  await t.rejects(pending, { message: 'stop' })
  await t.rejects(sleep(1, { signal: ac.signal }), { message: 'stop' }, 'already aborted: rejects at once')

  const asked: number[] = []
  const restore = useTimers({ setTimeout: (fn, ms) => { asked.push(ms); fn(); return null }, clearTimeout: () => {} })
  t.teardown(restore)
  await sleep(3_600_000)
  restore()
  t.same(asked, [3_600_000], 'the fake clock saw the hour and ended it at once')
})

t.test('forEachBounded: at most N in flight, every item once, in order', async (t) => {
  const items = Array.from({ length: 50 }, (_, i) => i)
  const started: number[] = []
  let inFlight = 0
  let inFlightMax = 0
  await forEachBounded(items, 4, async (i) => {
    started.push(i)
    inFlightMax = Math.max(inFlightMax, ++inFlight)
    await sleep(i % 3)
    inFlight--
  })
  t.equal(inFlightMax, 4)
  t.same(started, items)
  await forEachBounded([], 4, async () => { t.fail('no items, no calls') })
})

t.test('forEachBounded: the first failure stops new items and waits for the ones in flight', async (t) => {
  const items = Array.from({ length: 20 }, (_, i) => i)
  const started: number[] = []
  const finished: number[] = []
  const err = forEachBounded(items, 3, async (i) => {
    started.push(i)
    if (i === 1) throw new Error('one')
    if (i === 2) { await sleep(5); throw new Error('two') }
    await sleep(20)
    finished.push(i)
  })
  await t.rejects(err, { message: 'one' }, 'the first failure is thrown, later ones dropped')
  t.same(started, [0, 1, 2], 'nothing started after the failure')
  t.same(finished, [0], 'the call in flight finished before the throw')
})
