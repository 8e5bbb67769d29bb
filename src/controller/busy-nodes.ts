// Latency-aware repair, first step (issue 11 part 2): a repair competes with the guests' I/O on
// the nodes it reads from and writes to, so the repair duty does not start one while those nodes
// answer slowly. The signal is the one the cluster already has for free: every agent pings every
// node every 2 s and publishes the round trips in ZooKeeper (agent/rtt-monitor.ts, RttReport).
// A node's ping is served by the same event loop and disk queue as the guests' writes, so a node
// whose every fresh measurement — even from the nearest host — is slow is one the guests are
// waiting on. The nearest host's view (the minimum over hosts) is used so that a far site's WAN
// round trip never reads as "busy"; a report older than `freshMs` is ignored (a hung node is
// not measured at all: it is the hung-replica path's, not this one's).
// Left for later: slowing a repair already copying (its rate is fixed in its record) and the
// guests' own write latency per disk (the agents' metrics, not in ZooKeeper).
import { RTT_REPORT_FRESH_MS, type RttReport } from '../meta/schema'

export const REPAIR_BUSY_RTT_MS_DEFAULT = 100

export interface BusyNode { node: string, rttMs: number }

export function busyNodes (reports: RttReport[], nodeIds: string[], opts: { nowMs: number, thresholdMs: number, freshMs?: number }): BusyNode[] {
  if (opts.thresholdMs <= 0) return []
  const freshMs = opts.freshMs ?? RTT_REPORT_FRESH_MS
  const fresh = reports.filter(r => opts.nowMs - r.measuredAtMs <= freshMs)
  const out: BusyNode[] = []
  for (const node of nodeIds) {
    const seen = fresh.map(r => r.rttMs[node]).filter((ms): ms is number => typeof ms === 'number' && Number.isFinite(ms))
    if (seen.length === 0) continue
    const nearest = Math.min(...seen)
    if (nearest >= opts.thresholdMs) out.push({ node, rttMs: Math.round(nearest) })
  }
  return out
}
