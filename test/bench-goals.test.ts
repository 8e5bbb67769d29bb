// The bench's plumbing that needs no peer installed: BENCH_TARGETS parsing, issue 13's goal
// verdicts and the peer ratio table on made-up runs (bench/goals.ts, bench/report.ts); and the
// qemu-nbd target for real: qemu-nbd on a local raw file, the four workloads through fio's nbd
// engine for a second each, the data of the fill found in the file, qemu-nbd stopped by PID.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { GOALS, evaluateGoals, peerRatioTable, targetRatio, type Goal } from '../bench/goals'
import type { FioResult } from '../bench/fio'
import { WORKLOADS } from '../bench/jobs'
import { startQemuNbd } from '../bench/peer-nbd'
import { TARGETS, cpuMicrosPerIo, cpuTable, parseTargets, type TargetName, type TargetRun } from '../bench/report'
import { Progress, runWorkloads } from '../bench/target-run'
import { isAlive } from '../src/dev/pids'
import { makeTempDir } from './helpers/cluster'
import { qemuUnavailable } from './helpers/nbd'

const MIB = 1024 * 1024

// A fio result whose main figure is `value`: MiB/s for the 1 MiB jobs, IOPS for the 4 KiB ones.
function fio (id: string, value: number): FioResult {
  const w = WORKLOADS.find(x => x.id === id)!
  const bytesPerSec = w.blockSizeBytes >= MIB ? value * MIB : value * w.blockSizeBytes
  const d = { bytesPerSec, iops: value, ios: 1, meanLatencyUsec: 1, p99LatencyUsec: 1 }
  return { job: id, pattern: w.pattern, blockSizeBytes: w.blockSizeBytes, runtimeMs: 1, wallMs: 1, read: d, write: d, main: d, args: [] }
}

function run (target: TargetName, values: Partial<Record<string, number | null>>): TargetRun {
  const r: TargetRun = { target, fill: null, workloads: {}, error: null }
  for (const w of WORKLOADS) {
    const v = values[w.id]
    if (v === undefined) continue
    r.workloads[w.id] = v === null ? { fio: null, error: 'fio failed', cpuPercent: {} } : { fio: fio(w.id, v), error: null, cpuPercent: {} }
  }
  return r
}

t.test('BENCH_TARGETS: a subset in the bench\'s order, all when unset, unknown names refused', async (t) => {
  t.same(parseTargets(undefined), TARGETS)
  t.same(parseTargets(''), TARGETS)
  t.same(parseTargets('gluster, ukai-nbd,local'), ['local', 'ukai-nbd', 'gluster'], 'in TARGETS order, spaces trimmed')
  t.same(parseTargets('qemu-nbd,ceph'), ['qemu-nbd', 'ceph'])
  t.throws(() => parseTargets('ukai,glusterfs'), /BENCH_TARGETS: unknown target 'glusterfs' \(known: local, passthrough, passthrough-tuned, ukai, ukai-insecure, ukai-nbd, qemu-nbd, gluster, ceph\)/)
})

t.test('ratios use MiB/s for the 1 MiB jobs and IOPS for the 4 KiB ones', async (t) => {
  const runs = [run('ukai', { seqwrite: 150, randread: 9000 }), run('gluster', { seqwrite: 100, randread: 3000 })]
  t.equal(targetRatio(runs, 'ukai', 'gluster', 'seqwrite'), 1.5)
  t.equal(targetRatio(runs, 'ukai', 'gluster', 'randread'), 3)
  t.equal(targetRatio(runs, 'ukai', 'gluster', 'seqread'), null, 'no figure: no ratio')
  t.equal(targetRatio(runs, 'ukai', 'ceph', 'seqwrite'), null, 'target not run: no ratio')
})

t.test('CPU per I/O: 40 % of a core at 1,000 IOPS is 400 µs per I/O', async (t) => {
  t.equal(cpuMicrosPerIo(40, 1000), 400)
  t.equal(cpuMicrosPerIo(100, 20_000), 50)
})

t.test('goal verdicts: PASS, MISS below the bar, MISS when a job failed, n/a when not run', async (t) => {
  const all = { seqwrite: 200, seqread: 900, randread: 9000, randwrite: 2000 }
  const goals: Goal[] = [
    { id: 'beat', text: 'beats', numerator: 'ukai', denominator: 'gluster', workloads: ['seqwrite', 'seqread', 'randread', 'randwrite'], min: 1, strict: true },
    { id: 'half', text: 'half', numerator: 'ukai-nbd', denominator: 'qemu-nbd', workloads: ['randread'], min: 0.5, strict: false },
    { id: 'ceph', text: 'ceph', numerator: 'ukai', denominator: 'ceph', workloads: ['seqwrite'], min: 1, strict: true }
  ]
  const pass = evaluateGoals([run('ukai', all), run('gluster', { seqwrite: 199, seqread: 800, randread: 3000, randwrite: 700 }), run('ukai-nbd', { randread: 500 }), run('qemu-nbd', { randread: 1000 })], goals)
  t.same(pass.map(g => g.verdict), ['PASS', 'PASS', 'n/a'], 'exactly 0.5 meets ≥ 0.5; ceph not run')
  t.match(pass[2].why, /not run: ceph/)
  t.equal(pass[0].ratios.seqwrite, 1.005)

  const equal = evaluateGoals([run('ukai', all), run('gluster', all)], goals.slice(0, 1))
  t.equal(equal[0].verdict, 'MISS', 'a tie does not beat (strict)')
  t.match(equal[0].why, /missed on seqwrite, seqread, randread, randwrite/)

  const below = evaluateGoals([run('ukai-nbd', { randread: 499 }), run('qemu-nbd', { randread: 1000 })], goals.slice(1, 2))
  t.equal(below[0].verdict, 'MISS')
  t.match(below[0].why, /ukai-nbd \/ qemu-nbd ≥ 0.5 missed on randread \(randread 0.50\)|randread 0.499/)

  const failed = evaluateGoals([run('ukai', { ...all, randwrite: null }), run('gluster', { seqwrite: 1, seqread: 1, randread: 1, randwrite: 1 })], goals.slice(0, 1))
  t.equal(failed[0].verdict, 'MISS', 'a failed job is not a pass')
  t.match(failed[0].why, /not measured .*: randwrite/)

  const targetFailed = evaluateGoals([run('ukai', all), { target: 'gluster', fill: null, workloads: {}, error: 'glusterd did not start' }], goals.slice(0, 1))
  t.equal(targetFailed[0].verdict, 'MISS', 'a peer that failed to start is not a pass either')
})

t.test('tls-cost: ukai / ukai-insecure ≥ 0.85 on every job, n/a without the insecure target', async (t) => {
  const goal = GOALS.find(g => g.id === 'tls-cost')
  if (goal === undefined) { t.fail('no tls-cost goal'); return }
  const insecure = run('ukai-insecure', { seqwrite: 100, seqread: 100, randread: 1000, randwrite: 1000 })
  const pass = evaluateGoals([run('ukai', { seqwrite: 85, seqread: 100, randread: 900, randwrite: 1000 }), insecure], [goal])[0]
  t.equal(pass.verdict, 'PASS', pass.why)
  const miss = evaluateGoals([run('ukai', { seqwrite: 84, seqread: 100, randread: 1000, randwrite: 1000 }), insecure], [goal])[0]
  t.equal(miss.verdict, 'MISS')
  t.match(miss.why, /missed on seqwrite \(seqwrite 0\.84/)
  t.equal(evaluateGoals([run('ukai', { seqwrite: 1, seqread: 1, randread: 1, randwrite: 1 })], [goal])[0].verdict, 'n/a')
})

t.test('the peer ratio table shows only pairs whose targets both ran', async (t) => {
  const table = peerRatioTable([run('ukai', { seqwrite: 300, seqread: 100, randread: 100, randwrite: 100 }), run('gluster', { seqwrite: 100, seqread: 100, randread: 100, randwrite: 100 }), run('qemu-nbd', {})])
  t.match(table, /ukai \/ gluster/)
  t.notMatch(table, /ceph/)
  t.notMatch(table, /ukai-nbd/)
  t.match(table, /seq write 1M\s*│ 3\.00/)
  t.equal(peerRatioTable([run('local', {})]), '', 'no pair: no table')
})

t.test('the qemu-nbd target: fio\'s nbd engine through qemu-nbd, stopped by PID', { skip: qemuUnavailable() ?? false }, async (t) => {
  const dir = makeTempDir(t, 'bench-qemu-nbd')
  const sizeBytes = 16 * MIB
  const server = await startQemuNbd({ dir, sizeBytes, connections: 4 })
  t.teardown(async () => { await server.stop() })
  const r: TargetRun = { target: 'qemu-nbd', fill: null, workloads: {}, error: null }
  const settings = { fileSizeBytes: sizeBytes, numJobs: 2, runtimeSec: 1, rampSec: 0.1 }
  const quiet = new Progress(5)
  const out = process.stdout.write.bind(process.stdout)
  process.stdout.write = (() => true) as typeof process.stdout.write
  try {
    await runWorkloads('qemu-nbd', server.uri, settings, { 'qemu-nbd': server.pid }, quiet, r, { kind: 'nbd', uri: server.uri })
  } finally {
    process.stdout.write = out
  }
  t.ok(r.fill !== null && r.fill.main.ios >= 16, `the fill wrote the export: ${r.fill?.main.ios} 1 MiB writes`)
  const args = r.fill?.args ?? []
  t.ok(args.includes('--ioengine=nbd') && args.includes(`--uri=${server.uri}`) && !args.some(a => a.startsWith('--filename')), 'through fio\'s nbd engine, not a file')
  for (const w of WORKLOADS) {
    const res = r.workloads[w.id]
    t.equal(res?.error, null, `${w.id} ran`)
    t.ok((res?.fio?.main.iops ?? 0) > 0, `${w.id}: ${Math.round(res?.fio?.main.iops ?? 0)} IOPS`)
    t.ok(res?.cpuPercent['qemu-nbd'] !== undefined, `${w.id}: qemu-nbd's CPU measured`)
  }
  t.match(cpuTable(r), /CPU % of one core, µs of CPU per I\/O \(qemu-nbd\)[\s\S]*rand read 4K\s*│ \d+%, \d+ µs/, 'the CPU table has qemu-nbd\'s share and cost per I/O')
  // fio writes random buffers: every MiB of the raw file holds some of them, so the bytes went
  // through qemu-nbd into the file (a no-op engine or a wrong export would leave zeros).
  const image = fs.readFileSync(path.join(dir, 'disk.raw'))
  t.equal(image.length, sizeBytes)
  const zeroMiBs = [...Array(sizeBytes / MIB).keys()].filter(i => image.subarray(i * MIB, (i + 1) * MIB).every(b => b === 0))
  t.same(zeroMiBs, [], 'no MiB of the file is left all zeros')
  await server.stop()
  t.notOk(isAlive(server.pid), 'qemu-nbd stopped')
})
