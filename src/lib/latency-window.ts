// A latency histogram over a window that the reader closes: what the agent's writes to one
// storage node took since the last round-trip report (agent/rtt-monitor.ts publishes its p99 per
// node; relocate/copy-pace.ts slows a running copy when it rises).
//
// Why buckets and not a sorted sample: a write path that runs 13,000 requests/s must pay one
// index computation and one increment, never an allocation. Buckets grow by 2^(1/4) (19 %) from
// 50 µs to ~27 s, so a p99 read back is at most 19 % above the true one — far finer than the
// threshold it is compared against (a rise of several ms, and at least 2× the idle value).
const FIRST_BOUND_MS = 0.05
const STEPS_PER_DOUBLING = 4
const BUCKETS = 4 * 19  // 0.05 ms · 2^19 ≈ 26 s; slower samples land in the last bucket

export class LatencyWindow {
  private counts = new Uint32Array(BUCKETS)
  private n = 0

  observe (ms: number): void {
    const i = ms <= FIRST_BOUND_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log2(ms / FIRST_BOUND_MS) * STEPS_PER_DOUBLING))
    this.counts[i]++
    this.n++
  }

  get count (): number { return this.n }

  // The `q` quantile (0..1) of the window in ms (the upper bound of its bucket), and a fresh
  // window; null when nothing was observed.
  take (q: number): number | null {
    if (this.n === 0) return null
    const rank = Math.ceil(q * this.n)
    let seen = 0
    let i = 0
    for (; i < BUCKETS - 1; i++) {
      seen += this.counts[i]
      if (seen >= rank) break
    }
    this.counts = new Uint32Array(BUCKETS)
    this.n = 0
    return FIRST_BOUND_MS * 2 ** (i / STEPS_PER_DOUBLING)
  }
}
