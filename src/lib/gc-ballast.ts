// A heap ballast for the data-path daemons (storage node, mount agent), and the mount agent's
// fixed heap growth, without which the ballast does not hold under load.
//
// V8 starts an incremental mark-compact as soon as the old generation's headroom (its limit minus
// its size) is smaller than the young generation's capacity. A daemon of ours has a tiny old
// generation (~8 MB live), so its limit sits a few MB above it while the young generation grows
// to 16 MB under a stream of 128 KiB messages: the process then runs a mark-compact every
// 50-130 ms, each with 5-15 ms of marking steps and pause on the event loop, and every request in
// flight waits for it. Measured (bench/latency-layers.ts store, serial 128 KiB writes, --trace-gc
// on the node): 78 mark-compacts in 3 s, 647 ops/s, p99 19.8 ms, client 575 µs CPU per op;
// with 16 MiB of ballast in both processes: 3 mark-compacts, 2,463 ops/s, p99 1.3 ms, 164 µs.
//
// The ballast is live old-generation data that the marker does not have to trace (a packed array
// of doubles has no pointers), so the limit V8 derives from the live size leaves enough headroom.
// Startup flags (--max-semi-space-size, --initial-old-space-size) would do the same but cannot be
// set once the process runs; the cost is BALLAST_BYTES_DEFAULT of resident memory per daemon.
//
// The heap's growth (issue 13: the agent's peak RSS with 10 disks under load ≤ 256 MiB). After a
// mark-compact V8 sets the old generation's next limit to max(live × factor, live + 8 MB), the
// factor picked from GC speed against allocation speed: up to 4 when the collector is fast (an
// idle agent), down to 1.1 when it runs under load on a busy machine. Both ends hurt the agent
// (bench/agent-memory.ts, /proc/PID/smaps and the heap figures every 2 s, a GC observer):
// at 4, the heap's used size climbed from ~45 to ~115 MiB (committed 78 → 150) under load
// without one mark-compact — the whole difference between idle (~116 MiB) and peak RSS
// (277–305 MiB); glibc's heap (30–60 MiB) and the mapped code (~48 MiB) stayed flat. At ~1.1,
// once a mark-compact happened under load, the headroom (~8 MB) was below the young
// generation's 16 MB, so marking restarted at once: ~6 mark-compacts a second with the heap at
// ~44 MiB, a third of the I/O — seen in two runs with V8's own factor and in every run with the
// factor fixed at 1.25. capHeapGrowth fixes the factor (V8's --heap-growing-percent, read at
// every mark-compact, so it works set at run time from inside the daemon, whoever launched it):
// at 2 (100 %) the headroom is the live size, ~45 MB, above the young generation, and the heap
// stays near 2× its live size. Measured: docs/performance.md, "The agent's memory with 10 disks
// under load" (peak 226–251 MiB against 277–294 with V8's own factor, the same I/O).
import v8 from 'node:v8'

export const BALLAST_BYTES_DEFAULT = 16 * 1024 * 1024
export const HEAP_GROWING_PERCENT_AGENT_DEFAULT = 100
const DOUBLE_BYTES = 8

let ballast: number[] | undefined

// Idempotent: one ballast per process, whoever asks first sets its size.
export function holdGcBallast (bytes: number = BALLAST_BYTES_DEFAULT): void {
  if (ballast !== undefined || !(bytes > 0)) return
  const n = Math.floor(bytes / DOUBLE_BYTES)
  const a: number[] = []
  for (let i = 0; i < n; i++) a.push(0.5)  // not a small integer: the array stays PACKED_DOUBLE
  ballast = a
}

export function gcBallastBytes (): number { return (ballast?.length ?? 0) * DOUBLE_BYTES }

// After each mark-compact the old generation may grow by PERCENT of its live size before the
// next (0: V8's own factor, 1.1–4×). Process-wide; the last call wins.
export function capHeapGrowth (percent: number): void {
  if (!Number.isInteger(percent) || percent < 0) throw new RangeError(`heap growing percent: a whole number ≥ 0, not ${percent}`)
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`)
}
