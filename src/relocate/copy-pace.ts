// The pace of a running copy (a relocation, a repair, an evacuation: every copy goes through
// executor.ts, and this is its one rate limiter). Issue 11 part 2: a repair competes with the
// guests' I/O on the nodes it reads from and writes to; the controller does not *start* one while
// a node it would use is over its idle value by the rule below (controller/busy-nodes.ts calls
// signalOf and overIdle), and this slows one that runs when the guests start to wait.
//
// Signal: what the guests feel. Every agent publishes, with its round trips (every 2 s), the p99
// of its acknowledged writes to each node since its previous report (agent/rtt-monitor.ts); an
// agent that did not write to a node meanwhile has only its ping round trip to offer, used then.
// A node's signal is compared per (agent, node, kind) against its idle baseline — the lowest value
// this copy has seen there, and for writes the lowest p99 the agent saw in the 5 minutes before
// (writeIdleP99Ms: a copy that loads the nodes from its first block on would otherwise take its
// own load for idle) — so a far site's WAN round trip, or a slow disk that was always
// slow, never reads as congestion: only a rise does. A node is congested when some agent sees it
// at least `riseMs` above its baseline and at least twice it (the ratio keeps a 1 ms loopback
// node from tripping on every scheduler hiccup, the ms keeps a 40 ms WAN node from needing +40),
// in two reports in a row: the p99 of one report's writes is close to their maximum, and on this
// 2-core machine one slow write in a second (a GC pause, the scheduler) made it jump 10× now and
// then while a repair ran (test/relocate-copy-pace.test.ts: a2 51 ms against an idle 22 ms once).
//
// Rule: AIMD, as TCP. On each new report: any node of the copy congested → halve the pace (from
// the configured rate, or from the rate the copy was really moving at when it had none), never
// below the floor; a node over the threshold once → hold; none over → add an eighth of the ceiling back (the configured rate, or
// the fastest the copy moved unpaced), until it is back at the ceiling and the pace is lifted.
// Halving reacts within one report (2 s) to a rise the copy may be causing; adding back slowly
// (8 reports, ~16 s from the floor) keeps a copy from oscillating on a node that is near its
// limit. The floor guarantees an end; the ceiling is the record's `rateBytesPerSec` — the pace
// never runs above what the operator asked for. No agent reports (none mounted): no signal, no
// slowing. The pace steps on a timer of its own, not on finished copies: at the floor a big
// block takes seconds, and a pace stepped per block recovered a block at a time (measured: still
// at the floor 4 s after the node was fine). A resumed copy starts at the pace its earlier run
// saved in the record (resumedPace). Settings live in the cluster config (`ukai config set copy-pace-rise-ms …`), read
// on every step, so a change reaches running copies within seconds.
import { safetyCatch } from '../errors'
import { IoThrottle } from '../lib/io-throttle'
import { Logger } from '../log'
import {
  COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT, COPY_PACE_FLOOR_BYTES_PER_SEC_MIN, COPY_PACE_RISE_MS_DEFAULT, ClusterConfig, RTT_REPORT_FRESH_MS, RelocationPace, RttReport
} from '../meta/schema'
import { formatRate } from '../units'

// How often the copy looks for new reports (they come every 2 s; a step needs a new one).
export const PACE_CHECK_MS = 1000
const CONGESTED_RATIO = 2
const CONGESTED_REPORTS = 2
// Added back per report while nothing is congested: a share of the ceiling.
const INCREASE_SHARE = 1 / 8
const RECOVERING = 'recovering, was: '
const RESUMED = 'resumed, was: '
// The token bucket holds this much of a second of the pace: small, so the pace is smooth.
const BURST_SHARE = 0.25

// What the pace reads: the agents' reports and the cluster settings (MetaStore has both).
export interface PaceSource { listRtts: () => Promise<RttReport[]>, config: () => Promise<ClusterConfig> }

export interface PaceSettings { riseMs: number, floorBytesPerSec: number }
export function paceSettingsOf (c: ClusterConfig): PaceSettings {
  return { riseMs: c.copyPaceRiseMs ?? COPY_PACE_RISE_MS_DEFAULT, floorBytesPerSec: c.copyPaceFloorBytesPerSec ?? COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT }
}

export interface Congestion { node: string, host: string, kind: 'write p99' | 'ping', ms: number, baselineMs: number }
export function describeCongestion (c: Congestion): string {
  return `node ${c.node} ${c.kind} ${round(c.ms)} ms (idle ${round(c.baselineMs)} ms, seen from ${c.host})`
}
function round (ms: number): number { return ms >= 10 ? Math.round(ms) : Math.round(ms * 10) / 10 }

// What one report says of one node: the p99 of the agent's writes to it since its previous
// report (with its idle p99 of the 5 minutes before), or — when it wrote nothing there — its
// ping. null: not measured. The one reading of a report, for the running copy (PaceRule) and the
// controller's start gate (controller/busy-nodes.ts) alike.
export interface NodeSignal { kind: Congestion['kind'], ms: number, idleMs: number | null }
export function signalOf (r: RttReport, node: string): NodeSignal | null {
  const write = r.writeP99Ms?.[node]
  const kind = typeof write === 'number' ? 'write p99' : 'ping'
  const ms = typeof write === 'number' ? write : r.rttMs[node]
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) return null
  const idle = kind === 'write p99' ? r.writeIdleP99Ms?.[node] : undefined
  return { kind, ms, idleMs: typeof idle === 'number' && Number.isFinite(idle) && idle >= 0 ? idle : null }
}

// The rule itself: a value is over its idle baseline when it is at least `riseMs` above it and
// at least twice it (riseMs 0: never).
export function overIdle (ms: number, baselineMs: number, riseMs: number): boolean {
  return riseMs > 0 && ms - baselineMs >= riseMs && ms >= baselineMs * CONGESTED_RATIO
}

// The decision, without clocks or ZooKeeper (tested on its own: test/relocate-copy-pace-rule.test.ts).
export class PaceRule {
  private readonly baselines = new Map<string, number>()
  private readonly seenAtMs = new Map<string, number>()  // host → measuredAtMs of its last report used
  private readonly over = new Map<string, number>()      // key → reports in a row over the threshold

  // The worst congested node among `nodes` in the reports not seen before (null: none), and
  // whether some node was over the threshold in them at all (`over`: congested, or a first
  // time); `fresh` false: no new report.
  observe (reports: RttReport[], nodes: readonly string[], nowMs: number, riseMs: number): { fresh: boolean, worst: Congestion | null, over: boolean } {
    let fresh = false
    let over = false
    let worst: Congestion | null = null
    for (const r of reports) {
      if (nowMs - r.measuredAtMs > RTT_REPORT_FRESH_MS || (this.seenAtMs.get(r.host) ?? -1) >= r.measuredAtMs) continue
      this.seenAtMs.set(r.host, r.measuredAtMs)
      fresh = true
      for (const node of nodes) {
        const signal = signalOf(r, node)
        if (signal === null) continue
        const { kind, ms } = signal
        const key = `${r.host}|${node}|${kind}`
        const baselineMs = Math.min(ms, this.baselines.get(key) ?? ms, signal.idleMs ?? Infinity)
        this.baselines.set(key, baselineMs)
        if (!overIdle(ms, baselineMs, riseMs)) { this.over.delete(key); continue }
        over = true
        const inRow = (this.over.get(key) ?? 0) + 1
        this.over.set(key, inRow)
        if (inRow < CONGESTED_REPORTS) continue
        if (worst === null || ms - baselineMs > worst.ms - worst.baselineMs) worst = { node, host: r.host, kind, ms, baselineMs }
      }
    }
    return { fresh, worst, over }
  }
}

// Where a resumed copy starts (another host took it over, its executor died, or it was paused and
// started again): at the pace its previous run had learned and saved in the record, never above
// its rate; the AIMD goes on from there. Without it a copy taken over while the guests waited on
// its nodes ran at its full rate until two reports in a row had been seen again, then halved a
// report at a time: seconds of full-rate copying on nodes already known to be slow. A saved pace
// that makes no sense (below any floor ukai accepts) is ignored; `note` says which it was.
export function resumedPace (saved: RelocationPace | undefined, ceilingBytesPerSec: number): { pace: RelocationPace | null, note: string } {
  if (saved === undefined) return { pace: null, note: 'no pace saved by an earlier run: starts at its rate' }
  const { bytesPerSec } = saved
  if (!Number.isFinite(bytesPerSec) || bytesPerSec < COPY_PACE_FLOOR_BYTES_PER_SEC_MIN) {
    return { pace: null, note: `the saved pace (${bytesPerSec} bytes/s) is below any floor (${COPY_PACE_FLOOR_BYTES_PER_SEC_MIN}): ignored, starts at its rate` }
  }
  if (ceilingBytesPerSec > 0 && bytesPerSec >= ceilingBytesPerSec) return { pace: null, note: `the saved pace (${formatRate(bytesPerSec)}) is not below its rate: starts at its rate` }
  const why = `${RESUMED}${unprefixed(saved.why)}`
  const top = saved.topBytesPerSec
  return {
    pace: { bytesPerSec, why, sinceMs: saved.sinceMs, ...(ceilingBytesPerSec <= 0 && top !== undefined && top > bytesPerSec ? { topBytesPerSec: top } : {}) },
    note: `starts at the pace an earlier run had learned: ${formatRate(bytesPerSec)} (${unprefixed(saved.why)})`
  }
}
function unprefixed (why: string): string {
  for (const p of [RECOVERING, RESUMED]) if (why.startsWith(p)) return why.slice(p.length)
  return why
}

export interface CopyPaceOptions {
  source: PaceSource
  ceilingBytesPerSec: number        // the record's rate; 0: none
  resumed?: RelocationPace | null   // where to start (resumedPace()); null/absent: at the rate
  nodes: () => readonly string[]    // the nodes the copy reads from and writes to
  log: Logger
  onChange?: () => void             // the pace changed (the executor saves it in the record)
  nowMs?: () => number
}

export class CopyPace {
  private readonly opts: CopyPaceOptions
  private readonly throttle: IoThrottle
  private readonly rule = new PaceRule()
  private paced: RelocationPace | null = null
  private timer: NodeJS.Timeout | null = null
  private checking: Promise<void> | null = null
  private windowBytes = 0
  private windowStartMs: number
  private peakBytesPerSec = 0  // the fastest the copy moved between two steps without a pace

  constructor (opts: CopyPaceOptions) {
    this.opts = opts
    this.windowStartMs = this.now()
    const resumed = opts.resumed ?? null
    if (resumed !== null && (opts.ceilingBytesPerSec <= 0 || resumed.bytesPerSec < opts.ceilingBytesPerSec)) {
      this.paced = resumed
      this.peakBytesPerSec = resumed.topBytesPerSec ?? 0
    }
    this.throttle = new IoThrottle()
    this.applyLimit()
  }

  // The pace now, and why; null while the copy runs at its rate.
  get current (): RelocationPace | null { return this.paced }

  // While copies run: looks at the signal every PACE_CHECK_MS. stop() waits for a look in flight.
  start (): void {
    if (this.timer !== null) return
    this.timer = setInterval(() => {
      if (this.checking !== null) return
      // A failed look (ZooKeeper away) keeps the pace as it is.
      this.checking = this.step().catch(safetyCatch).finally(() => { this.checking = null })
    }, PACE_CHECK_MS)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.checking
  }

  // After a copy of `bytes`: waits as long as the pace (or the rate) asks. The bucket goes into
  // debt for a block larger than a quarter second of the pace (io-throttle.ts), and the copy
  // waits it off here, at the pace of the moment (a step changes it at once): so the last block
  // is paid for too, and a relocation of one 4 MiB block at 1 MB/s runs 4 s, as `--rate` said.
  async copied (bytes: number): Promise<void> {
    this.windowBytes += bytes
    await this.throttle.admit(bytes)
    await this.throttle.admit(0)
  }

  // The copy stops (the lease moved): a copy waiting out a big block's debt at the floor (a
  // 64 MiB block at 64 KiB/s is 1000 s) fails with `err` now instead.
  abort (err: Error): void { this.throttle.abort(err) }

  // One look at the signal and maybe a change of pace (the timer's; tests call it directly).
  async step (): Promise<void> {
    const [reports, config] = await Promise.all([this.opts.source.listRtts(), this.opts.source.config()])
    const settings = paceSettingsOf(config)
    const now = this.now()
    const { fresh, worst, over } = this.rule.observe(reports, this.opts.nodes(), now, settings.riseMs)
    if (!fresh) return
    const movedBytesPerSec = now > this.windowStartMs ? this.windowBytes * 1000 / (now - this.windowStartMs) : 0
    this.windowBytes = 0
    this.windowStartMs = now
    const ceiling = this.opts.ceilingBytesPerSec
    const floor = ceiling > 0 ? Math.min(settings.floorBytesPerSec, ceiling) : settings.floorBytesPerSec
    if (this.paced === null && ceiling <= 0) this.peakBytesPerSec = Math.max(this.peakBytesPerSec, movedBytesPerSec)
    if (worst !== null) {
      const from = this.paced?.bytesPerSec ?? (ceiling > 0 ? ceiling : Math.max(movedBytesPerSec, floor))
      const bytesPerSec = Math.round(Math.max(floor, from / 2))
      const why = describeCongestion(worst)
      if (bytesPerSec !== this.paced?.bytesPerSec) this.opts.log.warn({ bytesPerSec, why }, `copy slowed to ${formatRate(bytesPerSec)}: ${why}`)
      this.paced = this.withTop({ bytesPerSec, why, sinceMs: this.paced?.sinceMs ?? Date.now() })
    } else if (this.paced !== null && !over) {
      const top = ceiling > 0 ? ceiling : Math.max(this.peakBytesPerSec, floor)
      const bytesPerSec = Math.round(this.paced.bytesPerSec + Math.max(floor, top) * INCREASE_SHARE)
      if (bytesPerSec >= top) {
        this.opts.log.info({ pacedForMs: Date.now() - this.paced.sinceMs }, 'copy back at its rate: the nodes it uses are no longer slow for the guests')
        this.paced = null
      } else {
        this.paced = this.withTop({ ...this.paced, bytesPerSec, why: `${RECOVERING}${unprefixed(this.paced.why)}` })
      }
    }
    const before = this.throttle.limits.bytesPerSec
    this.applyLimit()
    if (this.throttle.limits.bytesPerSec !== before) this.opts.onChange?.()
  }

  // Without a rate, the record keeps what the pace climbs back to, for a run that resumes it.
  private withTop (p: RelocationPace): RelocationPace {
    const { topBytesPerSec, ...rest } = p
    return this.opts.ceilingBytesPerSec <= 0 && this.peakBytesPerSec > 0 ? { ...rest, topBytesPerSec: Math.round(this.peakBytesPerSec) } : rest
  }

  private applyLimit (): void {
    const bytesPerSec = this.paced?.bytesPerSec ?? this.opts.ceilingBytesPerSec
    this.throttle.setLimits({ opsPerSec: 0, bytesPerSec, burstOps: 0, burstBytes: Math.max(1, Math.round(bytesPerSec * BURST_SHARE)) })
  }

  private now (): number { return this.opts.nowMs?.() ?? Date.now() }
}
