// src/lib/lifecycle.ts in process: ready/close memoized and idempotent, close waits for an
// in-flight ready, destroy aborts (no drain) and wins over a draining close, errors surface once.
import t from 'tap'
import { Lifecycle, closeWithin } from '../src/lib/lifecycle'

function deferred (): { promise: Promise<void>, resolve: () => void, reject: (err: Error) => void } {
  let resolve!: () => void
  let reject!: (err: Error) => void
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

function counted (steps: { open?: () => Promise<void>, drain?: () => Promise<void>, release?: () => Promise<void> } = {}) {
  const n = { open: 0, drain: 0, abort: 0, release: 0 }
  const aborts: Error[] = []
  const life = new Lifecycle({
    open: async () => { n.open++; if (steps.open) await steps.open() },
    drain: async () => { n.drain++; if (steps.drain) await steps.drain() },
    abort: (err) => { n.abort++; aborts.push(err) },
    release: async () => { n.release++; if (steps.release) await steps.release() }
  })
  return { life, n, aborts }
}

t.test('ready and close: memoized, idempotent, state visible', async (t) => {
  const { life, n } = counted()
  t.equal(life.opened, false)
  const r1 = life.ready()
  t.equal(life.ready(), r1, 'a second ready returns the same promise')
  await r1
  t.equal(life.opened, true)
  t.equal(life.closing, false)
  const c1 = life.close()
  t.equal(life.closing, true, 'closing is set at once')
  t.equal(life.closed, false)
  t.equal(life.close(), c1, 'a concurrent close returns the same promise')
  await c1
  await life.close()
  t.equal(life.closed, true)
  t.same(n, { open: 1, drain: 1, abort: 0, release: 1 })
})

t.test('no open step: opened from the start; close without ready releases', async (t) => {
  let released = 0
  const life = new Lifecycle({ release: () => { released++ } })
  t.equal(life.opened, true)
  await life.ready()
  await Promise.all([life.close(), life.close()])
  t.equal(released, 1)
})

t.test('close during ready waits for the open to finish first', async (t) => {
  const open = deferred()
  const order: string[] = []
  const life = new Lifecycle({
    open: async () => { await open.promise; order.push('opened') },
    drain: async () => { order.push('drain') },
    release: () => { order.push('release') }
  })
  const ready = life.ready()
  const closing = life.close()
  await new Promise(resolve => setImmediate(resolve))
  t.same(order, [], 'nothing released under the open')
  open.resolve()
  await ready
  await closing
  t.same(order, ['opened', 'drain', 'release'])
})

t.test('ready after close rejects', async (t) => {
  const life = new Lifecycle({ open: async () => {} })
  await life.close()
  await t.rejects(life.ready(), { code: 'INTERNAL' })
})

t.test('a failed open: ready rejects (memoized), close still releases', async (t) => {
  const { life, n } = counted({ open: async () => { throw new Error('open failed') } })
  const r = life.ready()
  t.equal(life.ready(), r)
  await t.rejects(r, { message: 'open failed' })
  await life.close()
  t.same(n, { open: 1, drain: 1, abort: 0, release: 1 })
})

t.test('destroy: aborts, does not drain, idempotent; close after destroy returns its promise', async (t) => {
  const { life, n, aborts } = counted()
  const err = new Error('gone')
  const d = life.destroy(err)
  t.equal(life.destroyed, true)
  t.equal(life.closing, true)
  t.equal(life.destroy(new Error('other')), d, 'a second destroy returns the first promise')
  t.equal(life.close(), d, 'close after destroy returns the destroy promise')
  await d
  t.same(n, { open: 0, drain: 0, abort: 1, release: 1 })
  t.equal(aborts[0], err)
  t.equal(life.error, err)
  t.equal(life.closed, true)
})

t.test('destroy without an error uses an IO_ERROR', async (t) => {
  const { life, aborts } = counted()
  await life.destroy()
  t.match(aborts[0], { code: 'IO_ERROR' })
})

t.test('destroy during a draining close: abort runs at once, release once, both resolve', async (t) => {
  const drainGate = deferred()
  const { life, n } = counted({ drain: async () => { await drainGate.promise } })
  const c = life.close()
  await new Promise(resolve => setImmediate(resolve))
  t.equal(n.drain, 1, 'draining')
  const d = life.destroy(new Error('deadline'))
  await new Promise(resolve => setImmediate(resolve))
  t.equal(n.abort, 1, 'abort did not wait for the drain')
  t.equal(n.release, 0)
  drainGate.reject(new Error('aborted by destroy')) // what the abort step does to waiting work
  await c // the drain error is expected after destroy: not thrown
  await d
  t.same(n, { open: 0, drain: 1, abort: 1, release: 1 })
  t.equal(life.close(), d)
})

t.test('errors: a drain error is thrown after release; a release error from close and destroy', async (t) => {
  const a = counted({ drain: async () => { throw new Error('flush failed') } })
  const c = a.life.close()
  await t.rejects(c, { message: 'flush failed' })
  t.equal(a.n.release, 1, 'released even though the drain failed')
  t.equal(a.life.closed, true)
  await t.rejects(a.life.close(), { message: 'flush failed' }, 'memoized, rejected the same way')

  const b = counted({ release: async () => { throw new Error('release failed') } })
  await t.rejects(b.life.destroy(), { message: 'release failed' })
  t.equal(b.life.closed, true)

  let released = 0
  const bug = new Lifecycle({ abort: () => { throw new TypeError('bug') }, release: () => { released++ } })
  await t.rejects(bug.destroy(), TypeError, 'a throwing abort step surfaces')
  t.equal(released, 1, 'after the release ran')
})

t.test('closeWithin: closed in time, or destroyed past the deadline; a failed close throws', async (t) => {
  const quick = counted()
  t.equal(await closeWithin(quick.life, 1000, () => new Error('late')), 'closed')
  t.same(quick.n, { open: 0, drain: 1, abort: 0, release: 1 })

  const gate = deferred()
  const hung = new Lifecycle({ drain: async () => { await gate.promise }, abort: (err) => { gate.reject(err) } })
  const late = new Error('late')
  t.equal(await closeWithin(hung, 20, () => late), 'destroyed')
  t.equal(hung.error, late, 'destroyed with the deadline\'s error')
  t.equal(hung.closed, true)

  const failing = counted({ drain: async () => { throw new Error('flush failed') } })
  await t.rejects(closeWithin(failing.life, 1000, () => new Error('late')), { message: 'flush failed' })
  t.equal(failing.n.abort, 0, 'not destroyed')
})
