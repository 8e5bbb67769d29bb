// One lifecycle shape for every long-lived object (issue 10 part 4): `ready()` opens once,
// `close()` drains then releases, `destroy(err)` aborts then releases without draining.
//
// The model is hypercore's `ready-resource`: `ready()` and `close()` are memoized promises, a
// second concurrent call returns the first one's promise, and `close()` waits for an in-flight
// `ready()` before it runs (so an object is never released under its own open). We write the ~100
// lines here instead of depending on the package because (1) it is a base class (it extends
// EventEmitter and wants `_open/_close` overrides), and our classes keep their own constructors
// and static `open` factories, so we compose one `Lifecycle` per object instead; (2) it has no
// `destroy(err)`: undici's split (close drains, destroy aborts; both idempotent) is the part a
// storage engine needs most — a shutdown with a deadline destroys what did not drain; (3) it
// ships no types and its events are unused here.
//
// The object hands in its steps; every step is optional:
//   open     runs once, on the first ready()
//   drain    close() only: wait for accepted work to finish (flush, in-flight calls)
//   abort    destroy(err) only: fail waiting work with err, cancel timers; it runs at once, also
//            while a close is draining (so that drain ends early)
//   release  runs once on either path, after drain or abort: close handles, sessions, files
// A drain error is thrown from close() after release has run (the object is released either
// way). After destroy, drain errors are expected (abort failed the work) and are not thrown.

import { UkaiError, safetyCatch } from '../errors'
import { sleep } from './timers'

export interface LifecycleSteps {
  open?: () => Promise<void>
  drain?: () => Promise<void>
  abort?: (err: Error) => void | Promise<void>
  release?: () => void | Promise<void>
}

export class Lifecycle {
  private readonly steps: LifecycleSteps
  private opening: Promise<void> | null = null
  private closingP: Promise<void> | null = null
  private destroyingP: Promise<void> | null = null
  private destroyErr: Error | null = null
  private aborting = false
  opened = false
  closed = false

  // An object with no open step is open from the start (its static factory did the work).
  constructor (steps: LifecycleSteps = {}) {
    this.steps = steps
    if (steps.open === undefined) this.opened = true
  }

  // true from the first close()/destroy() on: callers refuse new work when this is set
  get closing (): boolean { return this.closingP !== null || this.aborting }
  get destroyed (): boolean { return this.aborting }
  // the error destroy was called with (or the default one), for failing late callers
  get error (): Error | null { return this.destroyErr }

  ready (): Promise<void> {
    if (this.opening === null) this.opening = this.open()
    return this.opening
  }

  close (): Promise<void> {
    if (this.destroyingP !== null) return this.destroyingP
    if (this.closingP === null) this.closingP = this.run()
    return this.closingP
  }

  destroy (err?: Error): Promise<void> {
    if (this.destroyingP !== null) return this.destroyingP
    this.destroyErr = err ?? UkaiError.io('destroyed')
    this.aborting = true
    this.destroyingP = this.runDestroy(this.destroyErr)
    return this.destroyingP
  }

  private async open (): Promise<void> {
    if (this.closing) throw UkaiError.internal('ready() after close()')
    if (this.steps.open !== undefined) await this.steps.open()
    this.opened = true
  }

  private async runDestroy (err: Error): Promise<void> {
    // the abort step runs at once: it is what makes a draining close (or a hung open) end early
    let abortErr: unknown = null
    try {
      if (this.steps.abort !== undefined) await this.steps.abort(err)
    } catch (e) { abortErr = e }
    // a close already under way releases once; wait for it (its drain error is not thrown now,
    // so a rejection here is the release step's own). A failed abort still releases.
    if (this.closingP === null) this.closingP = this.run()
    await this.closingP
    if (abortErr !== null) throw abortErr
  }

  private async run (): Promise<void> {
    // never release under an in-flight open; a failed open still releases what it set up
    if (this.opening !== null) await this.opening.catch(safetyCatch)
    let drainErr: unknown = null
    if (!this.aborting && this.steps.drain !== undefined) {
      try { await this.steps.drain() } catch (err) { drainErr = err }
    }
    try {
      if (this.steps.release !== undefined) await this.steps.release()
    } finally {
      this.closed = true
    }
    if (drainErr !== null && !this.aborting) throw drainErr
  }
}

export interface Closable {
  close: () => Promise<void>
  destroy: (err?: Error) => Promise<void>
}

// A shutdown's "drain with a deadline, destroy what did not drain": close(), and if that has not
// finished after deadlineMs, destroy(err()) (which ends the close as well). A close that fails
// before the deadline throws its error.
export async function closeWithin (res: Closable, deadlineMs: number, err: () => Error): Promise<'closed' | 'destroyed'> {
  const closing = res.close()
  const timer = new AbortController()
  const late = await Promise.race([
    closing.then(() => false, () => false),
    sleep(deadlineMs, { signal: timer.signal }).then(() => true, () => false)
  ])
  timer.abort()
  if (!late) { await closing; return 'closed' }
  await res.destroy(err())
  await closing.catch(safetyCatch)
  return 'destroyed'
}
