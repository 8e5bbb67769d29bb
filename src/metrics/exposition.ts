// How the daemons' numbers reach prom-client. The data path only adds to plain numbers it holds
// (a per-disk or per-call record found with one Map lookup, and a LatencyHistogram: a bucket
// index found by a short scan, one increment); prom-client's own Counter/Histogram would hash a
// label object on every call. At scrape time `collected` metrics read those numbers and hand
// them to prom-client's registry, which writes the text format. Label values are only disks,
// calls and error codes: never blocks, offsets or peers (bounded cardinality).
import type { Metric, Registry } from 'prom-client'

export type Labels = Record<string, string>
export interface Sample { metricName?: string, labels: Labels, value: number }
export type MetricType = 'counter' | 'gauge' | 'histogram'

// Latency bounds in seconds: 50 µs (a short-circuit read) to 10 s (a replica retried until the
// --io-retry-ms deadline). Ceph's and Longhorn's dashboards use the same decades.
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
]

export class LatencyHistogram {
  // Per bucket (not cumulative); the last one is +Inf.
  readonly counts = new Float64Array(LATENCY_BUCKETS_SECONDS.length + 1)
  sumSeconds = 0

  // `startMs`: performance.now() when the operation began.
  observeSince (startMs: number): void {
    const seconds = (performance.now() - startMs) / 1000
    let i = 0
    while (i < LATENCY_BUCKETS_SECONDS.length && seconds > LATENCY_BUCKETS_SECONDS[i]) i++
    this.counts[i]++
    this.sumSeconds += seconds
  }

  get count (): number {
    let n = 0
    for (const c of this.counts) n += c
    return n
  }

  // The samples of one series of a histogram called `name`.
  samples (name: string, labels: Labels, out: Sample[]): void {
    let cumulative = 0
    for (let i = 0; i < this.counts.length; i++) {
      cumulative += this.counts[i]
      const le = i < LATENCY_BUCKETS_SECONDS.length ? String(LATENCY_BUCKETS_SECONDS[i]) : '+Inf'
      out.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative })
    }
    out.push({ metricName: `${name}_sum`, labels, value: this.sumSeconds })
    out.push({ metricName: `${name}_count`, labels, value: cumulative })
  }
}

// Registers a metric whose samples `read` makes at scrape time (it may be async, e.g. a
// ZooKeeper read; it must then bound its own wait).
export function registerCollected (registry: Registry, name: string, help: string, type: MetricType, read: () => Sample[] | Promise<Sample[]>): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: await read() })
  }
  registry.registerMetric(metric as unknown as Metric)
}

// One sample per entry of `m` with label `label` = its key.
export function perKey<T> (m: Map<string, T>, label: string, value: (v: T) => number): Sample[] {
  const out: Sample[] = []
  for (const [k, v] of m) out.push({ labels: { [label]: k }, value: value(v) })
  return out
}
