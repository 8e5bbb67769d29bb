// When a disk's written blocks are flushed in the background (flush-behind, issue 13 part 4), so
// that a guest's fsync — and QEMU's flush when it stops the VM for a live migration — finds
// nothing, or only the last few writes, left to make durable. The flush itself is the disk's one
// group-commit flush (dirty-flush.ts): same rules, same failure handling.
//
// Triggers: the disk idle `idleMs` with blocks unflushed (a guest between two bursts; the bench's
// guest between two rounds), or the oldest unflushed write `maxAgeMs` old (a writer that never
// pauses). Measured, bench/write-cpu.ts (2,000 random 4 KiB writes over 64 MiB, 2 replicas, each
// row ending with an fsync; node fsync calls per MiB written): no flush-behind 8.2; a flush
// 100 ms after every first write 178 (x1) and 41 (x16) — an fsync storm for a continuous
// writer, whose writes a single late flush coalesces; idle-or-age alone 94 and 82 (under load
// the scheduler makes 20 ms idle gaps); with the budget below 41 and 16. In the migration bench
// the source's stop-time flush went from a median 176 (FUSE) / 480 (NBD) ms to 50 / 4 ms.
// Back-off: at most one background flush in flight; the next one starts no sooner than
// BUSY_FACTOR times the last one's duration after it ended (a slow node or WAN link makes
// flush-behind take at most ~1/(1+BUSY_FACTOR) of the flush path, not queue up), nor sooner
// than MS_PER_REPLICA for each block replica the last one flushed after it started: flush-behind
// costs a disk at most ~1000/MS_PER_REPLICA block-file fsyncs per second whatever it writes.
// A background flush that fails keeps its blocks dirty (dirty-flush.ts) and holds flush-behind
// until a flush succeeds: the guest's own fsync retries it and reports the outcome.

// Idle time after the last write before the background flush (`ukai mount --flush-behind-ms`;
// 0: off, blocks wait for the guest's fsync).
export const FLUSH_BEHIND_IDLE_MS_DEFAULT = 20
// The oldest unflushed write is flushed after this even while writes go on.
export const FLUSH_BEHIND_MAX_AGE_MS = 1000
const BUSY_FACTOR = 2
const MS_PER_REPLICA = 25

export interface FlushBehindDeps {
  idleMs: number                 // 0: off
  maxAgeMs?: number
  hasDirty: () => boolean
  flush: () => Promise<void>     // the background flush (shares the group commit)
  onDone: () => void             // a background flush succeeded
  lastReplicas: () => number     // block replicas the last flush took
  onFailed: (err: unknown) => void
  signal: AbortSignal
}

export class FlushBehind {
  private timer: NodeJS.Timeout | null = null
  private lastWriteAtMs = 0
  private firstDirtyAtMs = 0     // 0: nothing written since a flush took the dirty set
  private lastTookMs = 0
  private lastEndedAtMs = 0
  private lastStartedAtMs = 0
  private lastReplicas = 0
  private held = false

  constructor (private readonly d: FlushBehindDeps) {
    d.signal.addEventListener('abort', () => this.cancel(), { once: true })
  }

  get enabled (): boolean { return this.d.idleMs > 0 }

  // A block was written (acknowledged by its replicas) and is dirty.
  written (): void {
    if (!this.enabled) return
    const now = Date.now()
    this.lastWriteAtMs = now
    if (this.firstDirtyAtMs === 0) this.firstDirtyAtMs = now
    this.arm()
  }

  // A flush took the dirty set: the age counts from the next write.
  taken (): void { this.firstDirtyAtMs = 0 }

  // A flush failed and put its blocks back: they are as old as now (no new timer: a write arms
  // one, or the guest's fsync retries).
  restored (): void { if (this.firstDirtyAtMs === 0) this.firstDirtyAtMs = Date.now() }

  // A flush succeeded (the guest's or ours): flush-behind may run again.
  succeeded (): void {
    this.held = false
    if (this.d.hasDirty()) this.arm()
  }

  cancel (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }

  private dueAtMs (): number {
    const idle = this.lastWriteAtMs + this.d.idleMs
    const age = this.firstDirtyAtMs + (this.d.maxAgeMs ?? FLUSH_BEHIND_MAX_AGE_MS)
    return Math.max(Math.min(idle, age), this.lastEndedAtMs + this.lastTookMs * BUSY_FACTOR, this.lastStartedAtMs + this.lastReplicas * MS_PER_REPLICA)
  }

  private arm (): void {
    if (this.timer !== null || this.held || !this.enabled || this.d.signal.aborted) return
    this.timer = setTimeout(() => this.fire(), Math.max(0, this.dueAtMs() - Date.now()))
    this.timer.unref()
  }

  private fire (): void {
    this.timer = null
    if (!this.d.hasDirty() || this.d.signal.aborted) return
    if (this.dueAtMs() > Date.now()) { this.arm(); return }  // written since: not idle yet
    const startedAtMs = this.lastStartedAtMs = Date.now()
    this.d.flush().then(() => {
      this.lastEndedAtMs = Date.now()
      this.lastTookMs = this.lastEndedAtMs - startedAtMs
      this.lastReplicas = this.d.lastReplicas()
      this.d.onDone()
      if (this.d.hasDirty()) this.arm()
    }, (err) => {
      this.held = true
      this.d.onFailed(err)
    })
  }
}
