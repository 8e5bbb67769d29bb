// Round trips from this host to every storage node, measured continuously through the same
// clients (and so the same addresses, proxies included) that the disk I/O uses. Each round sends
// two cheap unary Stat calls per node with a short deadline and keeps the faster one (the first
// call on a fresh connection also pays for its set-up), smooths it, hands the result to the node
// pool for replica ordering, and publishes it in ZooKeeper for `ukai node list --from`, `ukai top`
// and the relocation planner — with the p99 of this host's writes to each node since the last
// round, what a running copy paces itself by (relocate/copy-pace.ts). Publishing is a background report (MetaStore.publishRtt): skipped
// while ZooKeeper is away, logged once per outage, never a reason to touch the session or a lease
// (issue 9: an unanswered report used to replace the session and drop every lease).
import { safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { DiskIoCounters } from '../meta/schema'
import { Logger, silentLogger } from '../log'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'

export const RTT_INTERVAL_MS_DEFAULT = 2000
const PROBE_TIMEOUT_MS = 1000
const PROBES_PER_ROUND = 2
// Weight of a new sample in the smoothed value (TCP uses 1/8; we probe rarely, so react faster).
const SMOOTHING = 0.3
// The idle write p99 of a node is the lowest per-round p99 of the last 5 minutes, kept as one
// minimum per minute: a copy that starts now compares against what the guests saw before it
// began (its own first reports already carry its load: relocate/copy-pace.ts).
const IDLE_MINUTE_MS = 60_000
const IDLE_MINUTES = 5

export interface RttMonitorOptions {
  meta: MetaStore
  pool: NodePool
  host: string
  site: string
  intervalMs?: number
  // Per-disk byte counters to publish with the round trips (an agent's I/O).
  ioSnapshot?: () => Record<string, DiskIoCounters>
  logger?: Logger
}

export class RttMonitor {
  private readonly opts: RttMonitorOptions
  private readonly intervalMs: number
  private readonly log: Logger
  private readonly smoothedMs = new Map<string, number>()
  private readonly idleWrite = new Map<string, Array<{ minute: number, minMs: number }>>()
  private timer: NodeJS.Timeout | null = null
  private round: Promise<void> | null = null
  private closed = false

  constructor (opts: RttMonitorOptions) {
    this.opts = opts
    this.intervalMs = opts.intervalMs ?? RTT_INTERVAL_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
  }

  // ready(): measures once (so replica order is right from the first I/O on), then every
  // interval. close(): the timer stopped, a round in flight awaited.
  private readonly life = new Lifecycle({
    open: async () => {
      await this.measure().catch(err => this.log.warn({ err: String(err) }, 'round-trip measurement failed'))
      this.schedule()
    },
    release: async () => {
      this.closed = true
      if (this.timer !== null) clearTimeout(this.timer)
      this.timer = null
      await this.round?.catch(safetyCatch)
    }
  })

  ready (): Promise<void> { return this.life.ready() }

  rtts (): Map<string, number> { return new Map(this.smoothedMs) }

  private schedule (): void {
    if (this.closed) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.round = this.measure()
        .catch(err => this.log.warn({ err: String(err) }, 'round-trip measurement failed'))
        .finally(() => { this.round = null; this.schedule() })
    }, this.intervalMs)
    this.timer.unref()
  }

  async measure (): Promise<void> {
    const nodes = this.opts.pool.list().filter(n => n.alive !== null)
    const live = new Set(nodes.map(n => n.id))
    for (const id of this.smoothedMs.keys()) if (!live.has(id)) this.smoothedMs.delete(id)
    await Promise.all(nodes.map(async (n) => {
      const sampleMs = await this.probe(n.id)
      if (this.closed) return
      const prev = this.smoothedMs.get(n.id)
      this.smoothedMs.set(n.id, prev === undefined ? sampleMs : prev + SMOOTHING * (sampleMs - prev))
    }))
    if (this.closed) return
    this.opts.pool.setRtts(this.smoothedMs)
    const rttMs: Record<string, number> = {}
    for (const [id, ms] of [...this.smoothedMs].sort((a, b) => a[0].localeCompare(b[0]))) rttMs[id] = Math.round(ms * 100) / 100
    // The guests' side of the same nodes: p99 of this host's writes to each since the last round.
    const writeP99Ms: Record<string, number> = {}
    const writeIdleP99Ms: Record<string, number> = {}
    for (const [id, ms] of [...this.opts.pool.takeWriteLatencyMs(0.99)].sort((a, b) => a[0].localeCompare(b[0]))) {
      writeP99Ms[id] = Math.round(ms * 100) / 100
      writeIdleP99Ms[id] = Math.round(this.noteIdle(id, ms) * 100) / 100
    }
    await this.opts.meta.publishRtt({ v: 1, host: this.opts.host, site: this.opts.site, measuredAtMs: Date.now(), rttMs, writeP99Ms, writeIdleP99Ms, io: this.opts.ioSnapshot?.() })
  }

  // Adds a round's write p99 of a node to its per-minute minima; returns the lowest of the window.
  private noteIdle (id: string, ms: number): number {
    const minute = Math.floor(Date.now() / IDLE_MINUTE_MS)
    const kept = (this.idleWrite.get(id) ?? []).filter(m => m.minute > minute - IDLE_MINUTES)
    const cur = kept.find(m => m.minute === minute)
    if (cur === undefined) kept.push({ minute, minMs: ms })
    else cur.minMs = Math.min(cur.minMs, ms)
    this.idleWrite.set(id, kept)
    return Math.min(...kept.map(m => m.minMs))
  }

  // The fastest of a few Stat round trips; a node that does not answer counts as the deadline.
  private async probe (id: string): Promise<number> {
    let best = PROBE_TIMEOUT_MS
    for (let i = 0; i < PROBES_PER_ROUND; i++) {
      const t0 = performance.now()
      let timer: NodeJS.Timeout | undefined
      try {
        const ok = await Promise.race([
          this.opts.pool.client(id).stat().then(() => true),
          new Promise<false>(resolve => { timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS) })
        ])
        if (!ok) return PROBE_TIMEOUT_MS
        best = Math.min(best, performance.now() - t0)
      } catch (err) {
        this.log.debug({ node: id, err: String(err) }, 'round-trip probe failed')
        return PROBE_TIMEOUT_MS
      } finally {
        clearTimeout(timer)
      }
    }
    return best
  }

  close (): Promise<void> { return this.life.close() }
}
