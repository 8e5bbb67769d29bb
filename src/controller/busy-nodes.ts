// The repair duty's start gate (issue 11 part 2): a repair competes with the guests' I/O on the
// nodes it reads from and writes to, so it is not started while the guests wait on one of them.
// The signal is the running copy's (relocate/copy-pace.ts, one owner of the rule): every agent
// publishes, every 2 s, the p99 of its acknowledged writes to each node since its previous report
// and its idle p99 of the 5 minutes before; a node is busy when some fresh report has it at least
// `copy-pace-rise-ms` above that idle value and at least twice it (signalOf + overIdle). So a
// gate that only looked at pings (served by the node's event loop, not its disk queue) no longer
// starts a repair on a node whose writes are 80 ms late while it answers pings in 1 ms, and the
// copy no longer starts at once only to be halved two reports later.
// One report is enough here (the running copy waits for two in a row): a gate that holds back
// once costs a look 2 s later, a copy halved on a blip costs its rate for seconds.
// A node no agent wrote to since its previous report has no write p99; only then the nearest
// agent's ping decides, against an absolute threshold (`--repair-busy-rtt-ms`): the minimum over
// hosts, so a far site's WAN round trip never reads as busy. A report older than `freshMs` is
// from an agent that went away and is ignored (a hung node is the hung-replica path's).
import { RTT_REPORT_FRESH_MS, type RttReport } from '../meta/schema'
import { Congestion, describeCongestion, overIdle, signalOf } from '../relocate/copy-pace'

export const REPAIR_BUSY_RTT_MS_DEFAULT = 100

// why: for the operator, "node a1 write p99 83 ms (idle 1.2 ms, seen from hv1)" as the running
// copy's "slowed to" says it, or "node a1 ping 150 ms (≥ 100 ms; no agent writes to it)".
export interface BusyNode { node: string, why: string }

export interface BusyOptions {
  nowMs: number
  riseMs: number          // the copy pace's rise (cluster setting copy-pace-rise-ms); 0: writes never make a node busy
  pingThresholdMs: number // the fallback's threshold; 0: pings never do
  freshMs?: number
}

export function busyNodes (reports: RttReport[], nodeIds: readonly string[], opts: BusyOptions): BusyNode[] {
  const freshMs = opts.freshMs ?? RTT_REPORT_FRESH_MS
  const fresh = reports.filter(r => opts.nowMs - r.measuredAtMs <= freshMs)
  const out: BusyNode[] = []
  for (const node of nodeIds) {
    let writes = 0
    let worst: Congestion | null = null
    const pings: number[] = []
    for (const r of fresh) {
      const s = signalOf(r, node)
      if (s === null) continue
      if (s.kind === 'ping') { pings.push(s.ms); continue }
      writes++
      const baselineMs = Math.min(s.ms, s.idleMs ?? s.ms)
      if (!overIdle(s.ms, baselineMs, opts.riseMs)) continue
      if (worst === null || s.ms - baselineMs > worst.ms - worst.baselineMs) worst = { node, host: r.host, kind: s.kind, ms: s.ms, baselineMs }
    }
    if (worst !== null) { out.push({ node, why: describeCongestion(worst) }); continue }
    if (writes > 0 || pings.length === 0 || opts.pingThresholdMs <= 0) continue
    const nearest = Math.min(...pings)
    if (nearest >= opts.pingThresholdMs) out.push({ node, why: `node ${node} ping ${Math.round(nearest)} ms (≥ ${opts.pingThresholdMs} ms; no agent writes to it)` })
  }
  return out
}
