// What end-to-end checksums cost (issue 11 part 4, goal `checksum-cost` in bench/goals.ts: ≤ 10%
// on every fio job): the four fio jobs of the fio suite on a UKAI disk (FUSE file, 2 replicas,
// bench/ukai-cluster.ts) with checksums on (the default) and off (`--bench-no-checksums` on the
// nodes and the agent: no sums written, nothing verified, no scrub), side by side in one run.
//
//   node dist/bench/checksum-cost.js        (~2 min per round; also `BENCH_SUITES=checksums npm run bench`)
//
// Rounds are interleaved (on, off, on, off, …), each on a fresh cluster with a fresh fill, so the
// noise of a shared machine hits both; the ratio per job is median(on) / median(off) (MiB/s for
// the 1 MiB jobs, IOPS for the 4 KiB ones), and each round's own ratio is shown beside it.
// Environment: BENCH_CHECKSUM_ROUNDS (3), BENCH_CHECKSUM_FILE_MIB (1024), BENCH_RUNTIME_SEC (10),
// BENCH_RAMP_SEC (2), BENCH_NUMJOBS (4). Results: bench/results/checksums-<date>.json and
// bench/results/latest-checksums.json. Exit 1 when the goal is missed.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createDisk } from '../src/admin/disk-admin'
import { RESULTS_DIR, envNumber } from './bench-env'
import { Cleanup } from './cleanup'
import type { FioResult } from './fio'
import { CHECKSUM_GOAL, evaluateGoals, goalLines, metricValue } from './goals'
import { WORKLOADS, type BenchSettings } from './jobs'
import type { TargetRun } from './report'
import { Progress, runWorkloads } from './target-run'
import { startUkaiCluster } from './ukai-cluster'

const MIB = 1024 * 1024
const DISK = 'bench'
type Variant = 'on' | 'off'
type WorkloadId = typeof WORKLOADS[number]['id']

export function median (xs: number[]): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

async function oneRun (variant: Variant, dir: string, settings: BenchSettings, progress: Progress, cleanup: Cleanup): Promise<TargetRun> {
  const off = variant === 'off' ? ['--bench-no-checksums'] : []
  const cluster = await startUkaiCluster({ dir, nodeArgs: off, agentArgs: off })
  cleanup.add(`stop the UKAI cluster (${variant})`, () => cluster.stop())
  const run: TargetRun = { target: variant === 'on' ? 'ukai' : 'ukai-no-checksums', fill: null, workloads: {}, error: null }
  try {
    await createDisk(cluster.meta, { name: DISK, sizeBytes: settings.fileSizeBytes, replicas: 2 })
    const pids: Record<string, number> = { agent: cluster.agent.pid }
    for (const n of cluster.nodes) pids[`node ${n.id}`] = n.pid
    await runWorkloads(run.target, path.join(cluster.mountPoint, DISK), settings, pids, progress, run)
  } catch (err) {
    run.error = (err as Error).message
    process.stdout.write(`FAILED: ${run.error}\n`)
  } finally {
    await cluster.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  return run
}

// The medians of every job, as one run of each variant (what evaluateGoals takes).
function medianRun (target: TargetRun['target'], runs: TargetRun[]): TargetRun {
  const out: TargetRun = { target, fill: null, workloads: {}, error: null }
  for (const w of WORKLOADS) {
    const values = runs.map(r => metricValue(r, w.id)).filter((v): v is number => v !== null)
    const m = median(values)
    if (m === null) continue
    // A result whose main figure is the median (MiB/s or IOPS, as metricValue reads it).
    const main = { bytesPerSec: w.blockSizeBytes >= MIB ? m * MIB : m * w.blockSizeBytes, iops: m, ios: 0, meanLatencyUsec: 0, p99LatencyUsec: 0 }
    const fio: FioResult = { job: w.id, pattern: w.pattern, blockSizeBytes: w.blockSizeBytes, runtimeMs: 0, wallMs: 0, read: main, write: main, main, args: [] }
    out.workloads[w.id] = { fio, error: null, cpuPercent: {} }
  }
  return out
}

async function main (): Promise<void> {
  const settings: BenchSettings = {
    fileSizeBytes: envNumber('BENCH_CHECKSUM_FILE_MIB', 1024) * MIB,
    numJobs: envNumber('BENCH_NUMJOBS', 4),
    runtimeSec: envNumber('BENCH_RUNTIME_SEC', 10),
    rampSec: envNumber('BENCH_RAMP_SEC', 2)
  }
  const rounds = envNumber('BENCH_CHECKSUM_ROUNDS', 3)
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-checksum-bench-'))
  const cleanup = new Cleanup()
  cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => { cleanup.run().finally(() => process.exit(130)) })
  }
  const startedAt = new Date()
  const results: Record<Variant, TargetRun[]> = { on: [], off: [] }
  try {
    process.stdout.write(`checksums on vs off: ${rounds} interleaved rounds, fio psync numjobs=${settings.numJobs} direct=1, ` +
      `${settings.runtimeSec} s + ${settings.rampSec} s ramp per job, ${settings.fileSizeBytes / MIB} MiB disk, 2 replicas\n`)
    const progress = new Progress(rounds * 2 * (WORKLOADS.length + 1))
    for (let r = 0; r < rounds; r++) {
      for (const v of ['on', 'off'] as const) {
        results[v].push(await oneRun(v, path.join(workDir, `${v}-${r}`), settings, progress, cleanup))
      }
    }
  } finally {
    await cleanup.run()
  }
  const rows = WORKLOADS.map((w) => {
    const on = results.on.map(r => metricValue(r, w.id))
    const off = results.off.map(r => metricValue(r, w.id))
    const perRound = on.map((a, i) => a === null || off[i] === null || off[i] === 0 ? null : round3(a / (off[i] as number)))
    const mOn = median(on.filter((x): x is number => x !== null))
    const mOff = median(off.filter((x): x is number => x !== null))
    return { workload: w.id as WorkloadId, unit: w.blockSizeBytes >= MIB ? 'MiB/s' : 'IOPS', on, off, perRound, medianOn: mOn, medianOff: mOff, ratio: mOn === null || mOff === null || mOff === 0 ? null : round3(mOn / mOff) }
  })
  process.stdout.write('\njob        unit    median on  median off  on/off  per round (on/off)\n')
  for (const row of rows) {
    process.stdout.write(`${row.workload.padEnd(10)} ${row.unit.padEnd(6)} ${fmt(row.medianOn).padStart(10)} ${fmt(row.medianOff).padStart(11)} ${(row.ratio?.toFixed(2) ?? '-').padStart(7)}  ${row.perRound.map(x => x?.toFixed(2) ?? '-').join(' ')}\n`)
  }
  const goals = evaluateGoals([medianRun('ukai', results.on), medianRun('ukai-no-checksums', results.off)], [CHECKSUM_GOAL])
  process.stdout.write(goalLines(goals) + '\n')
  if (goals.some(g => g.verdict === 'MISS')) process.exitCode = 1
  const out = { kind: 'ukai-checksum-cost', startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), settings: { ...settings, rounds, replicas: 2 }, rows, goal: goals[0], runs: results }
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, `checksums-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n')
  fs.copyFileSync(file, path.join(RESULTS_DIR, 'latest-checksums.json'))
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)} and bench/results/latest-checksums.json\n`)
}

function round3 (x: number): number { return Math.round(x * 1000) / 1000 }
function fmt (x: number | null): string { return x === null ? '-' : x.toFixed(0) }

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`checksum bench failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  })
}
