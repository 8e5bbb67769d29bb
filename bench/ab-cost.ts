// What a feature costs on the four fio jobs, measured side by side in one run: two clusters that
// differ only in the feature, each job run on one then the other, rounds alternating who goes first,
// so the noise of a shared machine hits both; the ratio per job is median(on) / median(off)
// (MiB/s for the 1 MiB jobs, IOPS for the 4 KiB ones), and each round's own ratio is shown beside it.
// Interleaving matters: the fio suite runs its targets one after the other, and there the TLS ratio
// swung 0.34–1.24 between two runs at load 11–14 (bench/goals.ts); here both sides share each minute.
//
//   node dist/bench/ab-cost.js checksums   end-to-end checksums on (the default) vs off
//                                           (`--bench-no-checksums` on the nodes and the agent: no
//                                           sums written, nothing verified, no scrub); issue 11 part
//                                           4, goal `checksum-cost` (≤ 10% on every job)
//   node dist/bench/ab-cost.js tls         mutual TLS on (the default) vs a cluster run --insecure;
//                                           issue 12, goal `tls-cost` (≥ 0.85 on every job)
//   node dist/bench/ab-cost.js heap        the agent's fixed heap growth (the default
//                                           --heap-growing-percent) vs V8's own factor (0); issue
//                                           13, goal `heap-growth-cost` (≥ 0.9 on every job)
//   (also `BENCH_SUITES=checksums` / `BENCH_SUITES=tls npm run bench`; ~1 min fill, ~2 min a round)
//
// FUSE file, 2 replicas (bench/ukai-cluster.ts). Environment: BENCH_AB_ROUNDS (3), BENCH_AB_FILE_MIB
// (1024), BENCH_RUNTIME_SEC (10), BENCH_RAMP_SEC (2), BENCH_NUMJOBS (4), BENCH_AB_JOBS (all four; e.g.
// `randwrite` or `randread,randwrite`: only those jobs run, and the goal is judged on them only),
// BENCH_AB_SETTLE (0; 1: before each job, `sync` and wait until the kernel's dirty and writeback
// pages are under 64 MiB — with 1 GiB disks a write job leaves ~2 GiB dirty on the nodes, which the
// flusher writes back 30 s later inside another job, so without it a sequential write job partly
// measures the page cache's writeback rather than the data path; session 10's TLS runs). Results:
// bench/results/<comparison>-<date>.json and bench/results/latest-<comparison>.json. Exit 1 when the
// goal is missed.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createDisk } from '../src/admin/disk-admin'
import { RESULTS_DIR, envNumber } from './bench-env'
import { Cleanup } from './cleanup'
import { runFio, type FioResult } from './fio'
import { CHECKSUM_GOAL, HEAP_GROWTH_GOAL, TLS_GOAL, evaluateGoals, goalLines, metricValue, type Goal } from './goals'
import { CpuMeter } from './proc-stats'
import { WORKLOADS, fillJob, timedJob, type BenchSettings, type WorkloadSpec } from './jobs'
import { cpuMicrosPerIo, formatFio, type TargetRun } from './report'
import { Progress } from './target-run'
import { startUkaiCluster, type UkaiCluster, type UkaiClusterOptions } from './ukai-cluster'

const MIB = 1024 * 1024
const DISK = 'bench'
type Variant = 'on' | 'off'
type WorkloadId = typeof WORKLOADS[number]['id']

// One comparison: the cluster options of each side, and the goal that judges on/off.
interface Comparison {
  id: 'checksums' | 'tls' | 'heap'
  title: string
  label: Record<Variant, string>
  cluster: Record<Variant, Omit<UkaiClusterOptions, 'dir'>>
  goal: Goal
}

const COMPARISONS: Comparison[] = [
  {
    id: 'checksums',
    title: 'checksums on vs off',
    label: { on: 'sums on', off: 'sums off' },
    cluster: { on: {}, off: { nodeArgs: ['--bench-no-checksums'], agentArgs: ['--bench-no-checksums'] } },
    goal: CHECKSUM_GOAL
  },
  {
    id: 'tls',
    title: 'mutual TLS on vs --insecure',
    label: { on: 'TLS on', off: 'insecure' },
    cluster: { on: { tls: true }, off: { tls: false } },
    goal: TLS_GOAL
  },
  {
    id: 'heap',
    title: 'agent heap growth fixed vs V8\'s own',
    label: { on: 'fixed', off: 'V8 own' },
    cluster: { on: {}, off: { agentArgs: ['--heap-growing-percent', '0'] } },
    goal: HEAP_GROWTH_GOAL
  }
]

export function median (xs: number[]): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

// The suite's settings and whether each job starts with the writeback settled.
interface AbSettings extends BenchSettings { settle: boolean }

interface Side { variant: Variant, label: string, cluster: UkaiCluster, filename: string, pids: Record<string, number> }

// A cluster for one variant, its disk created and filled once (the fill is not measured).
async function startSide (cmp: Comparison, variant: Variant, dir: string, settings: BenchSettings, progress: Progress, cleanup: Cleanup): Promise<Side> {
  const cluster = await startUkaiCluster({ dir, ...cmp.cluster[variant] })
  cleanup.add(`stop the UKAI cluster (${cmp.label[variant]})`, () => cluster.stop())
  await createDisk(cluster.meta, { name: DISK, sizeBytes: settings.fileSizeBytes, replicas: 2 })
  const filename = path.join(cluster.mountPoint, DISK)
  progress.start(cmp.label[variant], 'fill')
  const fill = await runFio(fillJob(filename, settings))
  progress.finish(`${(fill.main.bytesPerSec / MIB).toFixed(0)} MiB/s`)
  const pids: Record<string, number> = { agent: cluster.agent.pid }
  for (const n of cluster.nodes) pids[`node ${n.id}`] = n.pid
  return { variant, label: cmp.label[variant], cluster, filename, pids }
}

// The kernel's dirty + writeback pages in bytes (/proc/meminfo).
function unwrittenBytes (): number {
  const info = fs.readFileSync('/proc/meminfo', 'utf8')
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(info)?.[1] ?? 0)
  return (kib('Dirty') + kib('Writeback')) * 1024
}

// BENCH_AB_SETTLE: the previous job's writes out of the page cache before the next job starts.
async function settleWriteback (): Promise<void> {
  execFileSync('sync')
  const deadline = Date.now() + 60_000
  while (unwrittenBytes() > 64 * MIB && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 200))
}

async function runJob (side: Side, w: WorkloadSpec, settings: AbSettings, progress: Progress, run: TargetRun): Promise<void> {
  if (settings.settle) await settleWriteback()
  progress.start(side.label, w.label)
  const meter = new CpuMeter(side.pids)
  meter.begin()
  try {
    const fio = await runFio(timedJob(w, side.filename, settings))
    const cpuPercent = meter.end()
    run.workloads[w.id] = { fio, error: null, cpuPercent }
    progress.finish(`${formatFio(fio, w).replace('\n', ', ')}  [CPU ${Object.entries(cpuPercent).map(([p, c]) => `${p} ${c ?? '-'}%`).join(', ')}]`)
  } catch (err) {
    run.workloads[w.id] = { fio: null, error: (err as Error).message, cpuPercent: meter.end() }
    progress.finish(`FAILED: ${(err as Error).message.split('\n')[0]}`)
  }
}

// The medians of every job, as one run of each variant (what evaluateGoals takes).
function medianRun (target: TargetRun['target'], runs: TargetRun[], jobs: WorkloadSpec[]): TargetRun {
  const out: TargetRun = { target, fill: null, workloads: {}, error: null }
  for (const w of jobs) {
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

async function main (cmp: Comparison): Promise<void> {
  const settings: AbSettings = {
    fileSizeBytes: envNumber('BENCH_AB_FILE_MIB', 1024) * MIB,
    numJobs: envNumber('BENCH_NUMJOBS', 4),
    runtimeSec: envNumber('BENCH_RUNTIME_SEC', 10),
    rampSec: envNumber('BENCH_RAMP_SEC', 2),
    settle: envNumber('BENCH_AB_SETTLE', 0) === 1
  }
  const rounds = envNumber('BENCH_AB_ROUNDS', 3)
  const jobs = selectedJobs(process.env.BENCH_AB_JOBS)
  const goal: Goal = { ...cmp.goal, workloads: cmp.goal.workloads.filter(id => jobs.some(w => w.id === id)) }
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), `ukai-ab-${cmp.id}-`))
  const cleanup = new Cleanup()
  cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => { cleanup.run().finally(() => process.exit(130)) })
  }
  const startedAt = new Date()
  const results: Record<Variant, TargetRun[]> = { on: [], off: [] }
  try {
    process.stdout.write(`${cmp.title}: ${rounds} interleaved rounds, fio psync numjobs=${settings.numJobs} direct=1, ` +
      `${settings.runtimeSec} s + ${settings.rampSec} s ramp per job, ${settings.fileSizeBytes / MIB} MiB disk, 2 replicas` +
      `${settings.settle ? ', writeback settled before each job' : ''}\n`)
    const progress = new Progress(2 + rounds * 2 * jobs.length)
    const sides = { on: await startSide(cmp, 'on', path.join(workDir, 'on'), settings, progress, cleanup), off: await startSide(cmp, 'off', path.join(workDir, 'off'), settings, progress, cleanup) }
    for (let r = 0; r < rounds; r++) {
      const runs = { on: newRun(cmp.goal.numerator), off: newRun(cmp.goal.denominator) }
      results.on.push(runs.on)
      results.off.push(runs.off)
      // Job by job, the variants side by side; who goes first alternates by round.
      const order: Variant[] = r % 2 === 0 ? ['on', 'off'] : ['off', 'on']
      for (const w of jobs) for (const v of order) await runJob(sides[v], w, settings, progress, runs[v])
    }
  } finally {
    await cleanup.run()
  }
  const rows = jobs.map((w) => {
    const on = results.on.map(r => metricValue(r, w.id))
    const off = results.off.map(r => metricValue(r, w.id))
    const perRound = on.map((a, i) => a === null || off[i] === null || off[i] === 0 ? null : round3(a / (off[i] as number)))
    const mOn = median(on.filter((x): x is number => x !== null))
    const mOff = median(off.filter((x): x is number => x !== null))
    // CPU of the agent and both nodes per I/O: less at the mercy of other load than throughput.
    const cpu = (runs: TargetRun[]): number[] => runs.map(r => cpuPerIo(r, w.id)).filter((x): x is number => x !== null)
    const cpuOn = median(cpu(results.on))
    const cpuOff = median(cpu(results.off))
    return { cpuMicrosPerIoOn: cpuOn, cpuMicrosPerIoOff: cpuOff, cpuRatio: cpuOn === null || cpuOff === null || cpuOff === 0 ? null : round3(cpuOn / cpuOff), workload: w.id as WorkloadId, unit: w.blockSizeBytes >= MIB ? 'MiB/s' : 'IOPS', on, off, perRound, medianOn: mOn, medianOff: mOff, ratio: mOn === null || mOff === null || mOff === 0 ? null : round3(mOn / mOff) }
  })
  process.stdout.write('\njob        unit    median on  median off  on/off  per round (on/off)   CPU µs/IO on  off  on/off\n')
  for (const row of rows) {
    process.stdout.write(`${row.workload.padEnd(10)} ${row.unit.padEnd(6)} ${fmt(row.medianOn).padStart(10)} ${fmt(row.medianOff).padStart(11)} ${(row.ratio?.toFixed(2) ?? '-').padStart(7)}  ${row.perRound.map(x => x?.toFixed(2) ?? '-').join(' ').padEnd(20)}` +
      ` ${fmt(row.cpuMicrosPerIoOn).padStart(12)} ${fmt(row.cpuMicrosPerIoOff).padStart(4)} ${(row.cpuRatio?.toFixed(2) ?? '-').padStart(7)}\n`)
  }
  const goals = evaluateGoals([medianRun(cmp.goal.numerator, results.on, jobs), medianRun(cmp.goal.denominator, results.off, jobs)], [goal])
  process.stdout.write(goalLines(goals) + '\n')
  if (goals.some(g => g.verdict === 'MISS')) process.exitCode = 1
  const out = { kind: `ukai-ab-${cmp.id}`, startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), settings: { ...settings, rounds, replicas: 2, jobs: jobs.map(w => w.id) }, rows, goal: goals[0], runs: results }
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const file = path.join(RESULTS_DIR, `${cmp.id}-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n')
  fs.copyFileSync(file, path.join(RESULTS_DIR, `latest-${cmp.id}.json`))
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)} and bench/results/latest-${cmp.id}.json\n`)
}

// BENCH_AB_JOBS: the jobs to run, in the suite's order (unset: all of them).
function selectedJobs (env: string | undefined): WorkloadSpec[] {
  if (env === undefined || env.trim() === '') return WORKLOADS
  const ids = env.split(',').map(x => x.trim())
  const unknown = ids.filter(id => !WORKLOADS.some(w => w.id === id))
  if (unknown.length > 0) throw new Error(`BENCH_AB_JOBS: unknown job ${unknown.join(', ')} (jobs: ${WORKLOADS.map(w => w.id).join(', ')})`)
  return WORKLOADS.filter(w => ids.includes(w.id))
}

function newRun (target: TargetRun['target']): TargetRun { return { target, fill: null, workloads: {}, error: null } }
// CPU µs per I/O of the serving processes (agent and nodes), or null when not measured.
function cpuPerIo (run: TargetRun, id: WorkloadId): number | null {
  const w = run.workloads[id]
  if (w?.fio == null) return null
  const percents = Object.values(w.cpuPercent).filter((x): x is number => x !== null)
  return percents.length === 0 || w.fio.main.iops === 0 ? null : cpuMicrosPerIo(percents.reduce((a, b) => a + b, 0), w.fio.main.iops)
}

function round3 (x: number): number { return Math.round(x * 1000) / 1000 }
function fmt (x: number | null): string { return x === null ? '-' : x.toFixed(0) }

if (require.main === module) {
  const cmp = COMPARISONS.find(c => c.id === process.argv[2])
  if (cmp === undefined) {
    process.stderr.write(`usage: ab-cost.js ${COMPARISONS.map(c => c.id).join('|')} (got '${process.argv[2] ?? ''}')\n`)
    process.exit(2)
  }
  main(cmp).catch((err) => {
    process.stderr.write(`ab-cost bench failed: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  })
}
