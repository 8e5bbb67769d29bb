// src/lib/write-trace.ts: off without UKAI_WRITE_TRACE_DIR; with it, a process's stage events
// are written at exit (names in <pid>.json, events in <pid>.f64) on the clock of process.hrtime,
// which is what lets bench/write-stages.ts line up the agent's and the nodes' events.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

const MODULE = path.join(__dirname, '..', 'dist', 'src', 'lib', 'write-trace.js')

function runTraced (dir: string | undefined): string {
  const script = `
    const w = require(${JSON.stringify(MODULE)})
    const before = Number(process.hrtime.bigint()) / 1000
    w.traceWrite('nbd.req', 4096)
    w.traceWrite('client.sent a1', 3, 8192, 17)
    w.traceWrite('nbd.req', 8192)
    process.stdout.write(JSON.stringify({ on: w.writeTraceOn, before, after: Number(process.hrtime.bigint()) / 1000 }))`
  const env = { ...process.env }
  delete env.UKAI_WRITE_TRACE_DIR
  if (dir !== undefined) env.UKAI_WRITE_TRACE_DIR = dir
  return execFileSync(process.execPath, ['-e', script], { env, encoding: 'utf8' })
}

t.test('off without the variable: nothing is written', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-wtrace-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  t.equal(JSON.parse(runTraced(undefined)).on, false)
  t.same(fs.readdirSync(dir), [])
})

t.test('on: the events, in order, on the hrtime clock', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-wtrace-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const out = JSON.parse(runTraced(dir)) as { on: boolean, before: number, after: number }
  t.equal(out.on, true)
  const heads = fs.readdirSync(dir).filter(f => f.endsWith('.json'))
  t.equal(heads.length, 1)
  const head = JSON.parse(fs.readFileSync(path.join(dir, heads[0]), 'utf8')) as { stages: string[], fields: number, count: number }
  t.same(head.stages, ['nbd.req', 'client.sent a1'])
  t.equal(head.count, 3)
  const raw = fs.readFileSync(path.join(dir, heads[0].replace(/\.json$/, '.f64')))
  const ev = Array.from(new Float64Array(raw.buffer, raw.byteOffset, raw.length / 8))
  t.equal(ev.length, 3 * head.fields)
  t.same([0, 1, 2].map(i => [ev[i * head.fields], ...ev.slice(i * head.fields + 2, (i + 1) * head.fields)]), [[0, 4096, 0, 0], [1, 3, 8192, 17], [0, 8192, 0, 0]])
  const times = [0, 1, 2].map(i => ev[i * head.fields + 1])
  t.ok(times[0] <= times[1] && times[1] <= times[2], 'in order')
  // The shift from performance.now() is taken once: a few µs of slack either side.
  t.ok(times[0] >= out.before - 50 && times[2] <= out.after + 50, `on the hrtime clock: ${times.join(', ')} within [${out.before}, ${out.after}]`)
})
