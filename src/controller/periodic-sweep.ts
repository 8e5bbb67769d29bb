// The one periodic loop of the controller's sweeping duties (orphaned relocations, automatic
// repair, scrub findings): a sweep now or soon, then one every `intervalMs`, never two at once,
// a failed sweep logged and tried again at the next tick. Each duty had its own copy of this
// loop; the copies differed only in how they logged and when the next sweep came.
import { safetyCatch } from '../errors'
import { Logger } from '../log'

export interface PeriodicSweepOptions {
  intervalMs: number
  log: Logger
  what: string  // for the log line of a failed sweep
  // One sweep; it may return how long until the next one (default: intervalMs).
  sweep: () => Promise<number | undefined | void>
}

export class PeriodicSweep {
  private timer: NodeJS.Timeout | null = null
  private nextAtMs = 0
  private sweeping: Promise<void> | null = null
  private again = false
  private closed = false
  lastSweepAtMs = 0

  constructor (private readonly opts: PeriodicSweepOptions) {}

  // Sweeps in `ms`, unless one is planned sooner; asked while one runs, another follows it.
  sweepIn (ms: number): void {
    if (this.closed) return
    const at = Date.now() + ms
    if (this.timer !== null && this.nextAtMs <= at) return
    if (this.timer !== null) clearTimeout(this.timer)
    this.nextAtMs = at
    this.timer = setTimeout(() => {
      this.timer = null
      if (this.sweeping !== null) { this.again = true; return }
      let nextMs = this.opts.intervalMs
      this.sweeping = this.opts.sweep().then((ms) => {
        this.lastSweepAtMs = Date.now()
        if (typeof ms === 'number') nextMs = ms
      }, (err) => {
        safetyCatch(err)
        this.opts.log.warn({ err: String(err) }, `${this.opts.what} sweep failed; trying again`)
      }).finally(() => {
        this.sweeping = null
        const again = this.again
        this.again = false
        this.sweepIn(again ? 0 : nextMs)
      })
    }, ms)
    this.timer.unref()
  }

  get closing (): boolean { return this.closed }

  // No sweep starts after this; the one running (if any) is waited for.
  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.sweeping
  }
}
