// Stage timestamps of replicated writes, for bench/write-stages.ts (issue 13 part 3: where the
// ~0.87 ms of an NBD 4 KiB write goes). Off unless UKAI_WRITE_TRACE_DIR names a directory; then
// each process (agent, storage nodes) keeps up to WRITE_TRACE_EVENTS_MAX events (stage, time,
// three numbers that identify the write at that stage) in memory and writes them when it exits:
// DIR/<pid>.json (the stage names) and DIR/<pid>.f64 (the events, FIELDS float64 each). Times
// are CLOCK_MONOTONIC µs (performance.now() is that clock, shifted per process; the shift is taken
// out here), so the processes' events line up.
// Off, a stage costs the caller one boolean test (`if (writeTraceOn) traceWrite(…)`).
import * as fs from 'node:fs'
import * as path from 'node:path'

const DIR = process.env.UKAI_WRITE_TRACE_DIR ?? ''
export const writeTraceOn = DIR !== ''
// 5 s of 4 KiB writes at ~5k/s, ~15 events each per process, three times over.
export const WRITE_TRACE_EVENTS_MAX = 1 << 20
const FIELDS = 5  // stage, µs, a, b, c

let events: Float64Array | null = null
let count = 0
const stageIds = new Map<string, number>()
// performance.now() + this = CLOCK_MONOTONIC in µs (process.hrtime's clock).
let originUs = 0

// `stage` names the point on the path (with the node's id where it matters: 'client.sent a1');
// a, b, c identify the write there (e.g. block, offset in block, request id).
export function traceWrite (stage: string, a: number, b = 0, c = 0): void {
  if (!writeTraceOn) return
  if (events === null) start()
  if (count >= WRITE_TRACE_EVENTS_MAX) return
  const e = events as Float64Array
  let id = stageIds.get(stage)
  if (id === undefined) { id = stageIds.size; stageIds.set(stage, id) }
  const i = count++ * FIELDS
  e[i] = id
  e[i + 1] = performance.now() * 1000 + originUs
  e[i + 2] = a
  e[i + 3] = b
  e[i + 4] = c
}

function start (): void {
  events = new Float64Array(WRITE_TRACE_EVENTS_MAX * FIELDS)
  originUs = Number(process.hrtime.bigint()) / 1000 - performance.now() * 1000
  process.on('exit', dump)
}

function dump (): void {
  if (events === null) return
  const head = { pid: process.pid, argv: process.argv.slice(2, 4), stages: [...stageIds.keys()], fields: FIELDS, count }
  try {
    fs.writeFileSync(path.join(DIR, `${process.pid}.f64`), events.subarray(0, count * FIELDS))
    fs.writeFileSync(path.join(DIR, `${process.pid}.json`), JSON.stringify(head))
  } catch (err) {
    process.stderr.write(`write trace: ${(err as Error).message}\n`)
  }
}
