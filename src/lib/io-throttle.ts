// Token buckets and the I/O throttle built from two of them (operations and bytes per second):
// what a disk's QoS limits (`ukai disk qos`) become in the disk engine (src/vdisk/virtual-disk.ts).
//
// Why a bucket that may go into debt: a request larger than the bucket (a 32 MiB NBD write under
// a 1 MB/s cap with a 1 MB burst) must still pass. It waits until the bucket holds what it can
// hold (min(cost, capacity)), then takes its whole cost; the level goes below zero and the next
// request waits the debt off. The long-run rate stays exact and nothing starves.
// Why one FIFO queue for both buckets: a request needs both; taking from one while waiting for
// the other would let small requests overtake a large one for ever.
// Why the level is computed, not ticked: tokens accrue continuously from the clock, so a late
// timer (a busy event loop) costs latency, never rate (as long as the bucket does not overflow,
// which a burst of at least 1 s of the rate makes rare). The clock and the timers are injected
// (tests drive them by hand: test/io-throttle.test.ts).
import { Timers } from './timers'

// A bucket of `capacity` tokens refilled at `ratePerSec`.
export class TokenBucket {
  private level: number
  private atMs: number

  constructor (private ratePerSec: number, private capacity: number, nowMs: number) {
    this.level = capacity // full: a disk that just opened may burst at once
    this.atMs = nowMs
  }

  tokens (nowMs: number): number {
    if (nowMs > this.atMs) {
      this.level = Math.min(this.capacity, this.level + (nowMs - this.atMs) * this.ratePerSec / 1000)
      this.atMs = nowMs
    }
    return this.level
  }

  // Ms until a request of `cost` may pass (0: now).
  waitMs (cost: number, nowMs: number): number {
    const need = Math.min(cost, this.capacity) - this.tokens(nowMs)
    return need <= 0 ? 0 : need * 1000 / this.ratePerSec
  }

  take (cost: number, nowMs: number): void {
    this.tokens(nowMs)
    this.level -= cost
  }

  // New limits keep the tokens held (capped at the new capacity) and any debt.
  setLimits (ratePerSec: number, capacity: number, nowMs: number): void {
    this.tokens(nowMs)
    this.ratePerSec = ratePerSec
    this.capacity = capacity
    this.level = Math.min(this.level, capacity)
  }
}

// Limits of a throttle: 0 for a rate means unlimited in that dimension.
export interface ThrottleLimits { opsPerSec: number, bytesPerSec: number, burstOps: number, burstBytes: number }
export const UNLIMITED: ThrottleLimits = { opsPerSec: 0, bytesPerSec: 0, burstOps: 0, burstBytes: 0 }

interface Waiter { bytes: number, resolve: () => void, reject: (err: unknown) => void }

export interface ThrottleClock { nowMs: () => number, timers: Timers }
const realClock: ThrottleClock = {
  nowMs: () => performance.now(),
  timers: { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) }
}

export class IoThrottle {
  private ops: TokenBucket | null = null
  private bytes: TokenBucket | null = null
  private readonly queue: Waiter[] = []
  private timer: unknown = null
  private aborted: unknown = null
  private current: ThrottleLimits = UNLIMITED

  constructor (limits: ThrottleLimits = UNLIMITED, private readonly clock: ThrottleClock = realClock) {
    this.setLimits(limits)
  }

  get limits (): ThrottleLimits { return this.current }
  get waiting (): number { return this.queue.length }

  // Takes effect at once, also for requests already waiting.
  setLimits (limits: ThrottleLimits): void {
    const now = this.clock.nowMs()
    this.current = { ...limits }
    this.ops = bucketFor(this.ops, limits.opsPerSec, Math.max(1, limits.burstOps), now)
    this.bytes = bucketFor(this.bytes, limits.bytesPerSec, Math.max(1, limits.burstBytes), now)
    this.pump()
  }

  // One request of `bytes`: resolves when it may run. Undefined when it may run now (no promise
  // on the fast path: an unlimited disk pays nothing).
  admit (bytes: number): Promise<void> | undefined {
    if (this.aborted !== null) return Promise.reject(this.aborted)
    if (this.ops === null && this.bytes === null) return undefined // unlimited: nothing waits either
    if (this.queue.length === 0 && this.passNow(bytes)) return undefined
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject })
      this.pump()
    })
  }

  // Every waiting and later request fails with `err` (the disk is being destroyed).
  abort (err: unknown): void {
    this.aborted = err
    this.clearTimer()
    for (const w of this.queue.splice(0)) w.reject(err)
  }

  private passNow (bytes: number): boolean {
    if (this.waitMs(bytes) > 0) return false
    const now = this.clock.nowMs()
    this.ops?.take(1, now)
    this.bytes?.take(bytes, now)
    return true
  }

  private waitMs (bytes: number): number {
    const now = this.clock.nowMs()
    return Math.max(this.ops?.waitMs(1, now) ?? 0, this.bytes?.waitMs(bytes, now) ?? 0)
  }

  private pump (): void {
    this.clearTimer()
    while (this.queue.length > 0) {
      const head = this.queue[0]
      const wait = this.waitMs(head.bytes)
      if (wait > 0) {
        // Rounded up: waking a little late costs nothing (tokens accrue), early is a wasted wake.
        this.timer = this.clock.timers.setTimeout(() => { this.timer = null; this.pump() }, Math.ceil(wait))
        return
      }
      this.passNow(head.bytes)
      this.queue.shift()
      head.resolve()
    }
  }

  private clearTimer (): void {
    if (this.timer === null) return
    this.clock.timers.clearTimeout(this.timer)
    this.timer = null
  }
}

function bucketFor (old: TokenBucket | null, ratePerSec: number, capacity: number, nowMs: number): TokenBucket | null {
  if (ratePerSec <= 0) return null
  if (old === null) return new TokenBucket(ratePerSec, capacity, nowMs)
  old.setLimits(ratePerSec, capacity, nowMs)
  return old
}
