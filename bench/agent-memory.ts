// The mount agent's memory with many disks open under load (issue 13: "peak RSS of the agent with
// 10 disks open under load (goal ≤ 256 MiB)"). One cluster (ZooKeeper, two nodes, one agent, TLS
// as always), MEMORY_DISKS disks of 2 replicas, each written through the mount first (so the
// reads find data), then every disk driven at once by its own fio job for MEMORY_RUNTIME_SEC:
// the disks take turns at sequential 1 MiB writes, random 4 KiB writes, sequential 1 MiB reads
// and random 4 KiB reads, so write buffers, read-ahead, sums caches and open block files are all
// in use together. The agent's resident set is sampled every MEMORY_SAMPLE_MS and its peak read
// from the kernel (VmHWM) at the end; the nodes' peaks are reported beside it.
//
//   node dist/bench/agent-memory.js        (also `BENCH_SUITES=memory npm run bench`; ~2 min)
// Environment: MEMORY_DISKS (10), MEMORY_DISK_MIB (256), MEMORY_RUNTIME_SEC (30),
// MEMORY_SAMPLE_MS (500), MEMORY_GOAL_MIB (256), MEMORY_AGENT_ARGS (more `ukai mount` arguments,
// space-separated: e.g. `--heap-growing-percent 0`, V8's own heap growth as before issue 13's
// fix). Exit 1 when the goal is missed or a job failed.
// Writes bench/results/memory-<date>.json and latest-memory.json.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import Table from 'cli-table3'
import { createDisk } from '../src/admin/disk-admin'
import { RESULTS_DIR, envNumber } from './bench-env'
import { Cleanup } from './cleanup'
import { parseFioJson } from './fio'
import { peakRssBytes } from './proc-stats'
import { startUkaiCluster } from './ukai-cluster'

const MIB = 1024 * 1024

interface Mix { label: string, rw: string, bs: string }
// Disk i runs MIXES[i % 4]: every kind of I/O at once, on every disk count ≥ 4.
const MIXES: Mix[] = [
  { label: 'seq write 1M', rw: 'write', bs: '1M' },
  { label: 'rand write 4K', rw: 'randwrite', bs: '4k' },
  { label: 'seq read 1M', rw: 'read', bs: '1M' },
  { label: 'rand read 4K', rw: 'randread', bs: '4k' }
]

export interface MemoryResult {
  kind: 'ukai-agent-memory'
  startedAt: string
  settings: { disks: number, diskMiB: number, runtimeSec: number, sampleMs: number, goalMiB: number, agentArgs: string[] }
  disks: Array<{ name: string, mix: string, bytes: number, ios: number, error: number }>
  agent: { peakRssBytes: number | null, kernelPeakRssBytes: number | null, sampledMaxRssBytes: number, idleRssBytes: number | null, samples: number }
  nodes: Record<string, number | null>
  goal: { id: 'agent-memory', text: string, verdict: 'PASS' | 'MISS', reason: string }
}

function rssBytes (pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

async function fio (args: string[]): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile('fio', args, { maxBuffer: 64 * MIB }, (err, stdout, stderr) => {
      if (err !== null && stdout === '') reject(new Error(`fio failed: ${String(stderr).slice(-500) || err.message}`))
      else resolve(stdout)
    })
  })
}

function mib (b: number | null): string { return b === null ? '-' : `${(b / MIB).toFixed(0)} MiB` }

async function main (): Promise<void> {
  const settings = {
    disks: envNumber('MEMORY_DISKS', 10),
    diskMiB: envNumber('MEMORY_DISK_MIB', 256),
    runtimeSec: envNumber('MEMORY_RUNTIME_SEC', 30),
    sampleMs: envNumber('MEMORY_SAMPLE_MS', 500),
    goalMiB: envNumber('MEMORY_GOAL_MIB', 256),
    agentArgs: (process.env.MEMORY_AGENT_ARGS ?? '').split(' ').filter(a => a !== '')
  }
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-memory-'))
  const cleanup = new Cleanup()
  cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => { cleanup.run().finally(() => process.exit(130)) })
  }
  const startedAt = new Date()
  let result: MemoryResult
  try {
    process.stdout.write(`agent memory: ${settings.disks} disks of ${settings.diskMiB} MiB (2 replicas), all under fio at once for ${settings.runtimeSec} s\n`)
    const cluster = await startUkaiCluster({ dir: path.join(workDir, 'ukai'), agentArgs: settings.agentArgs })
    cleanup.add('stop the UKAI cluster', () => cluster.stop())
    const agentPid = cluster.agent.pid
    if (cluster.metricsAddresses.length > 0) process.stdout.write(`  metrics (BENCH_METRICS=1; heap and external memory per daemon): ${cluster.metricsAddresses.join(' ')}\n`)
    const names = Array.from({ length: settings.disks }, (_, i) => `mem${String(i).padStart(2, '0')}`)
    for (const name of names) await createDisk(cluster.meta, { name, sizeBytes: settings.diskMiB * MIB, replicas: 2 })
    const idleRssBytes = rssBytes(agentPid)
    const file = (name: string): string => path.join(cluster.mountPoint, name)
    const common = ['--ioengine=psync', '--direct=1', '--fallocate=none', '--output-format=json']

    const fillStart = Date.now()
    process.stdout.write(`  filling ${settings.disks} × ${settings.diskMiB} MiB (1 MiB writes, all disks at once) …`)
    await fio([...common, ...names.flatMap(n => [`--name=fill-${n}`, `--filename=${file(n)}`, '--rw=write', '--bs=1M', `--size=${settings.diskMiB}M`])])
    process.stdout.write(` ${((Date.now() - fillStart) / 1000).toFixed(1)} s\n`)

    let sampledMax = 0
    let samples = 0
    const sampler = setInterval(() => {
      const r = rssBytes(agentPid)
      if (r !== null) { sampledMax = Math.max(sampledMax, r); samples++ }
    }, settings.sampleMs)
    const ticker = setInterval(() => { process.stdout.write(`  … agent RSS now ${mib(rssBytes(agentPid))}, max so far ${mib(sampledMax)}\n`) }, 5000)
    let out: string
    try {
      out = await fio([...common, '--time_based', `--runtime=${settings.runtimeSec}`, '--randrepeat=0', '--norandommap',
        ...names.flatMap((n, i) => [`--name=${n}`, `--filename=${file(n)}`, `--rw=${MIXES[i % MIXES.length].rw}`, `--bs=${MIXES[i % MIXES.length].bs}`, `--size=${settings.diskMiB}M`])])
    } finally {
      clearInterval(sampler)
      clearInterval(ticker)
    }
    const jobs = parseFioJson(out).jobs
    const disks = names.map((name, i) => {
      const j = jobs.find(x => x.jobname === name)
      const d = j === undefined ? undefined : (MIXES[i % MIXES.length].rw.includes('write') ? j.write : j.read)
      return { name, mix: MIXES[i % MIXES.length].label, bytes: d === undefined ? 0 : Math.round(d.bw_bytes * (j?.job_runtime ?? 0) / 1000), ios: d?.total_ios ?? 0, error: j === undefined ? -1 : j.error }
    })
    // The kernel's high-water mark lags (RSS counters are folded into it lazily): a sample can
    // exceed it, so the peak is the larger of the two.
    const kernelPeak = peakRssBytes(agentPid)
    const peak = kernelPeak === null ? null : Math.max(kernelPeak, sampledMax)
    const nodes: Record<string, number | null> = {}
    for (const n of cluster.nodes) nodes[n.id] = peakRssBytes(n.pid)
    const failed = disks.filter(d => d.error !== 0 || d.ios === 0)
    const goalBytes = settings.goalMiB * MIB
    const text = `mount agent's peak RSS with ${settings.disks} disks open under load ≤ ${settings.goalMiB} MiB (issue 13)`
    const verdict = peak !== null && peak <= goalBytes && failed.length === 0 ? 'PASS' : 'MISS'
    const reason = failed.length > 0
      ? `fio failed or did nothing on ${failed.map(d => d.name).join(', ')}`
      : peak === null ? 'the agent is gone: no peak to read' : `peak ${mib(peak)} (VmHWM ${mib(kernelPeak)}, sampled max ${mib(sampledMax)}, idle ${mib(idleRssBytes)})`
    result = {
      kind: 'ukai-agent-memory',
      startedAt: startedAt.toISOString(),
      settings,
      disks,
      agent: { peakRssBytes: peak, kernelPeakRssBytes: kernelPeak, sampledMaxRssBytes: sampledMax, idleRssBytes, samples },
      nodes,
      goal: { id: 'agent-memory', text, verdict, reason }
    }
  } finally {
    await cleanup.run()
  }

  const table = new Table({ head: ['disk', 'fio job', 'MiB moved', 'I/Os', 'error'], style: { head: [], border: [] } })
  for (const d of result.disks) table.push([d.name, d.mix, (d.bytes / MIB).toFixed(0), d.ios, d.error])
  process.stdout.write(table.toString() + '\n')
  const mem = new Table({ head: ['process', 'peak RSS'], style: { head: [], border: [] } })
  mem.push(['mount agent (VmHWM or a higher sample)', mib(result.agent.peakRssBytes)], ['mount agent, idle with the disks created', mib(result.agent.idleRssBytes)])
  for (const [id, b] of Object.entries(result.nodes)) mem.push([`storage node ${id} (VmHWM)`, mib(b)])
  process.stdout.write(mem.toString() + '\n')
  process.stdout.write(`goal ${result.goal.verdict} ${result.goal.text}: ${result.goal.reason}\n`)

  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const out = path.join(RESULTS_DIR, `memory-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  fs.copyFileSync(out, path.join(RESULTS_DIR, 'latest-memory.json'))
  process.stdout.write(`wrote ${path.relative(process.cwd(), out)} and ${path.relative(process.cwd(), path.join(RESULTS_DIR, 'latest-memory.json'))}\n`)
  process.exitCode = result.goal.verdict === 'PASS' ? 0 : 1
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`agent-memory: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(2)
  })
}
