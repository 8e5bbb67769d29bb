// Hung nodes. A stopped process (SIGSTOP, a wedged host, a link that drops packets) refuses
// nothing: its kernel keeps accepting bytes, and every request would wait its full deadline
// (10 s) — measured before this: 0.4 MB/s of writes while one replica of two hung. So the client
// watches progress: when requests are outstanding and the node has answered nothing for
// `hungAfterMs` — no request and no Ping (answered on the node's event loop without touching its
// disk, so a node in a long fsync still answers it) — the node is hung: everything pending fails
// with UNAVAILABLE at once, and new requests fail at once until it answers a Ping again. A node
// that is slow but answering is never hung. The state is shared by all clients of one node
// (`NodeProgress`), so reads and writes learn it together.
//
// Split from client.ts (the request pipeline) so the rule of when a node is hung has one owner.
import { safetyCatch } from '../errors'
import { LatencyWindow } from '../lib/latency-window'

// A node silent this long with requests outstanding is hung. Writes wait at most
// this long on a hung replica before it is failed (and the disk marks it stale).
export const REPLICA_HUNG_MS_DEFAULT = 2_500
// Silence before a Ping asks whether the node is slow or hung; while hung, how often it is asked
// again; the watchdog's tick.
const PING_AFTER_SILENCE_MS = 1_000
// The smallest hung bound: it must leave a silent node time to answer the Ping sent after 1 s.
export const REPLICA_HUNG_MS_MIN = PING_AFTER_SILENCE_MS + 1
export const PING_TIMEOUT_MS = 1_000
const HUNG_CHECK_INTERVAL_MS = 250
// A long call (a PullBlock) is cancelled only once its node has been hung this long: longer than
// the stalls of a node starved of CPU (seconds at load 43-65), far shorter than its deadline.
const LONG_CALL_HUNG_CANCEL_MS = 10_000

// What this process knows of one node's progress: when it last answered anything, and since
// when it counts as hung (null: it does not).
export class NodeProgress {
  lastAnswerAtMs = Date.now()
  hungSinceMs: number | null = null
  pinging = false
  // How long this process's writes to the node took (acknowledged ones), since the round-trip
  // report last took the window: what the guests feel of the node (relocate/copy-pace.ts).
  readonly writeLatency = new LatencyWindow()
  private readonly onHung = new Set<(why: string) => void>()

  get hung (): boolean { return this.hungSinceMs !== null }

  noteAnswer (): void {
    this.lastAnswerAtMs = Date.now()
    this.hungSinceMs = null
  }

  declareHung (why: string): void {
    if (this.hungSinceMs !== null) return
    this.hungSinceMs = Date.now()
    for (const fn of [...this.onHung]) fn(why)
  }

  subscribe (fn: (why: string) => void): () => void {
    this.onHung.add(fn)
    return () => { this.onHung.delete(fn) }
  }
}

// What the watchdog needs of the client it watches.
export interface WatchedClient {
  oldestOwedAtMs: () => number | null  // when the oldest answer the node owes was asked for; null: none owed
  owedCount: () => number
  hasLongCalls: () => boolean
  cancelLongCalls: () => void
  ping: () => Promise<void>
  isClosed: () => boolean
}

// Runs while requests are owed or the node is hung; stops by itself when neither.
export class HungWatchdog {
  private timer: NodeJS.Timeout | undefined
  // When the watchdog last ran: a tick that comes late finds this process was stalled.
  private lastCheckAtMs = 0

  constructor (private readonly progress: NodeProgress, private readonly hungAfterMs: number, private readonly client: WatchedClient) {}

  start (): void {
    if (this.timer !== undefined || this.client.isClosed()) return
    this.lastCheckAtMs = Date.now()
    this.timer = setInterval(() => this.check(), HUNG_CHECK_INTERVAL_MS)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  private check (): void {
    const now = Date.now()
    const p = this.progress
    // A tick a whole interval late: this process was stalled (a starved agent), and what the node
    // answered meanwhile may wait unread in the socket — timers run before I/O in a loop turn.
    // Judge on the next tick, after the answers were read, not now.
    const lateMs = now - this.lastCheckAtMs - HUNG_CHECK_INTERVAL_MS
    this.lastCheckAtMs = now
    if (lateMs >= HUNG_CHECK_INTERVAL_MS) return
    if (p.hung) {
      if (this.client.hasLongCalls() && now - (p.hungSinceMs ?? now) >= LONG_CALL_HUNG_CANCEL_MS) this.client.cancelLongCalls()
      this.sendPing()
      return
    }
    const oldestOwedAtMs = this.client.oldestOwedAtMs()
    if (oldestOwedAtMs === null) { this.stop(); return }
    // Silent since the later of: its last answer, the oldest request it owes us.
    const silentMs = now - Math.max(p.lastAnswerAtMs, Math.min(oldestOwedAtMs, now))
    if (silentMs >= this.hungAfterMs) {
      p.declareHung(`no answer for ${silentMs} ms with ${this.client.owedCount()} requests outstanding`)
    } else if (silentMs >= PING_AFTER_SILENCE_MS) {
      this.sendPing()
    }
  }

  private sendPing (): void {
    const p = this.progress
    if (p.pinging || this.client.isClosed()) return
    p.pinging = true
    this.client.ping().then(() => p.noteAnswer()).catch(safetyCatch).finally(() => { p.pinging = false })
  }
}
