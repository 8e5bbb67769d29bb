// A heap ballast for the data-path daemons (storage node, mount agent).
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
export const BALLAST_BYTES_DEFAULT = 16 * 1024 * 1024
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
