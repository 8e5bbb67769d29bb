// Turning measurements into ratios, floor verdicts and readable tables.
import Table from 'cli-table3'
import type { FioResult } from './fio'
import { WORKLOADS, type WorkloadSpec } from './jobs'
import type { BigDiskResult } from './big-disk'

// passthrough: the issue's baseline, a minimal fuse-native passthrough (fuse-native as published,
// libfuse 2: 128 KiB requests, one direct write at a time per file). passthrough-tuned: the same
// passthrough on UKAI's fuse-native build with the kernel features the UKAI mount asks for (1 MiB
// requests, parallel direct writes), so the report also shows UKAI against a like-for-like FUSE.
// ukai-nbd: the same UKAI disk through the agent's NBD export (fio's nbd engine); qemu-nbd: a
// local raw file served by qemu-nbd, measured the same way (the C ceiling of the NBD path);
// gluster, ceph: the peers an operator would otherwise pick, replica 2 (bench/peer-*.ts).
// ukai-insecure: the FUSE file again on a cluster run --insecure (no TLS), bench-only, so that one
// run gives the cost of TLS on every job (issue 12: ukai / ukai-insecure ≥ 0.85, bench/goals.ts).
export type TargetName = 'local' | 'passthrough' | 'passthrough-tuned' | 'ukai' | 'ukai-insecure' | 'ukai-nbd' | 'qemu-nbd' | 'gluster' | 'ceph' | 'ukai-no-checksums' | 'ukai-v8-heap-growth'
// 'ukai-no-checksums' and 'ukai-v8-heap-growth' are not: only bench/ab-cost.ts runs them.
export const TARGETS: TargetName[] = ['local', 'passthrough', 'passthrough-tuned', 'ukai', 'ukai-insecure', 'ukai-nbd', 'qemu-nbd', 'gluster', 'ceph']
// The targets that need Debian packages beyond scripts/setup.sh (bench/setup-peers.sh installs them).
export const PEER_TARGETS: TargetName[] = ['gluster', 'ceph']

// BENCH_TARGETS: a comma-separated subset of TARGETS, run in TARGETS' order; unset or empty: all.
export function parseTargets (value: string | undefined): TargetName[] {
  if (value === undefined || value.trim() === '') return TARGETS
  const wanted = value.split(',').map(s => s.trim()).filter(s => s !== '')
  for (const t of wanted) if (!TARGETS.includes(t as TargetName)) throw new Error(`BENCH_TARGETS: unknown target '${t}' (known: ${TARGETS.join(', ')})`)
  return TARGETS.filter(t => wanted.includes(t))
}

export interface WorkloadRun {
  fio: FioResult | null
  error: string | null
  cpuPercent: Record<string, number | null>  // process → % of one core during the job
}

export interface TargetRun {
  target: TargetName
  fill: FioResult | null
  workloads: Partial<Record<WorkloadSpec['id'], WorkloadRun>>
  error: string | null
}

// The issue's floors, as ratios UKAI / passthrough.
export const FLOORS: Array<{ workload: WorkloadSpec['id'], metric: 'MiB/s' | 'IOPS', minRatio: number }> = [
  { workload: 'seqread', metric: 'MiB/s', minRatio: 0.5 },
  { workload: 'seqwrite', metric: 'MiB/s', minRatio: 0.35 },
  { workload: 'randread', metric: 'IOPS', minRatio: 0.4 },
  { workload: 'randwrite', metric: 'IOPS', minRatio: 0.3 }
]

export interface RatioRow {
  workload: WorkloadSpec['id']
  metric: 'MiB/s' | 'IOPS'
  local: number | null
  passthrough: number | null
  passthroughTuned: number | null
  ukai: number | null
  ukaiVsPassthrough: number | null
  ukaiVsTunedPassthrough: number | null
  ukaiVsLocal: number | null
  floor: number | null
  verdict: 'PASS' | 'BELOW' | 'n/a'
}

const MIB = 1024 * 1024
// Plain tables: the output is read in terminals and in CI logs alike.
const NO_COLOR = { head: [], border: [] }

function metricOf (w: WorkloadSpec): 'MiB/s' | 'IOPS' {
  return w.blockSizeBytes >= MIB ? 'MiB/s' : 'IOPS'
}

function valueOf (run: TargetRun | undefined, w: WorkloadSpec): number | null {
  const fio = run?.workloads[w.id]?.fio
  if (fio == null) return null
  return metricOf(w) === 'MiB/s' ? fio.main.bytesPerSec / MIB : fio.main.iops
}

function ratio (a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : Math.round(a / b * 1000) / 1000
}

export function ratioRows (runs: TargetRun[]): RatioRow[] {
  const by = (t: TargetName): TargetRun | undefined => runs.find(r => r.target === t)
  return WORKLOADS.map((w) => {
    const local = valueOf(by('local'), w)
    const passthrough = valueOf(by('passthrough'), w)
    const passthroughTuned = valueOf(by('passthrough-tuned'), w)
    const ukai = valueOf(by('ukai'), w)
    const ukaiVsPassthrough = ratio(ukai, passthrough)
    const floor = FLOORS.find(f => f.workload === w.id)?.minRatio ?? null
    const verdict = floor === null || ukaiVsPassthrough === null ? 'n/a' : ukaiVsPassthrough >= floor ? 'PASS' : 'BELOW'
    return { workload: w.id, metric: metricOf(w), local, passthrough, passthroughTuned, ukai, ukaiVsPassthrough, ukaiVsTunedPassthrough: ratio(ukai, passthroughTuned), ukaiVsLocal: ratio(ukai, local), floor, verdict }
  })
}

// ---- formatting ----------------------------------------------------------------------------

export function formatBytes (n: number | null): string {
  if (n === null) return '-'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let v = n
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`
}

function formatNumber (n: number): string {
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1)
}

// "685 MiB/s" for sequential jobs; "19,812 IOPS (77.4 MiB/s)" for 4 KiB ones.
export function formatFio (fio: FioResult | null | undefined, w: WorkloadSpec): string {
  if (fio == null) return 'failed'
  const mibPerSec = fio.main.bytesPerSec / MIB
  if (metricOf(w) === 'MiB/s') return `${formatNumber(mibPerSec)} MiB/s\n${formatNumber(fio.main.iops)} IOPS`
  return `${formatNumber(fio.main.iops)} IOPS\n${formatNumber(mibPerSec)} MiB/s`
}

function formatRatio (r: number | null): string {
  return r === null ? '-' : r.toFixed(2)
}

// The columns: the targets of this run, in TARGETS' order.
function ranTargets (runs: TargetRun[]): TargetName[] {
  return TARGETS.filter(t => runs.some(r => r.target === t))
}

export function resultTable (runs: TargetRun[], rows: RatioRow[]): string {
  const targets = ranTargets(runs)
  const table = new Table({ style: NO_COLOR, head: ['workload', ...targets, 'ukai / passthrough', 'ukai / passthrough-tuned', 'ukai / local', 'floor (vs passthrough)'] })
  for (const w of WORKLOADS) {
    const row = rows.find(r => r.workload === w.id)
    const cells = targets.map(t => {
      const run = runs.find(r => r.target === t)
      if (run === undefined) return 'not run'
      return formatFio(run.workloads[w.id]?.fio, w)
    })
    const floor = row?.floor == null ? '-' : `≥ ${row.floor} ${row.metric}: ${row.verdict}`
    table.push([`${w.label}\n(${row?.metric ?? ''})`, ...cells, formatRatio(row?.ukaiVsPassthrough ?? null), formatRatio(row?.ukaiVsTunedPassthrough ?? null), formatRatio(row?.ukaiVsLocal ?? null), floor])
  }
  return table.toString()
}

export function latencyTable (runs: TargetRun[]): string {
  const targets = ranTargets(runs)
  const table = new Table({ style: NO_COLOR, head: ['mean / p99 latency (µs)', ...targets] })
  for (const w of WORKLOADS) {
    table.push([w.label, ...targets.map(t => {
      const fio = runs.find(r => r.target === t)?.workloads[w.id]?.fio
      return fio == null ? '-' : `${Math.round(fio.main.meanLatencyUsec)} / ${Math.round(fio.main.p99LatencyUsec)}`
    })])
  }
  return table.toString()
}

export function cpuTable (run: TargetRun | undefined): string {
  if (run === undefined) return ''
  const procs = new Set<string>()
  for (const w of WORKLOADS) for (const p of Object.keys(run.workloads[w.id]?.cpuPercent ?? {})) procs.add(p)
  const names = [...procs]
  const table = new Table({ style: NO_COLOR, head: [`CPU % of one core, µs of CPU per I/O (${run.target})`, ...names] })
  for (const w of WORKLOADS) {
    const cpu = run.workloads[w.id]?.cpuPercent ?? {}
    const iops = run.workloads[w.id]?.fio?.main.iops ?? 0
    table.push([w.label, ...names.map(n => cpu[n] == null ? '-' : `${cpu[n]}%${iops > 0 ? `, ${cpuMicrosPerIo(cpu[n] as number, iops)} µs` : ''}`)])
  }
  return table.toString()
}

// CPU time per I/O from a process's share of one core over the job and the job's IOPS.
export function cpuMicrosPerIo (cpuPercent: number, iops: number): number {
  return Math.round(cpuPercent / 100 / iops * 1e6)
}

export function resourceTable (memory: Record<string, number | null>, bigDisk: BigDiskResult | null): string {
  const table = new Table({ style: NO_COLOR, head: ['measure', 'value'] })
  for (const [name, bytes] of Object.entries(memory)) table.push([`peak RSS (VmHWM) ${name}`, formatBytes(bytes)])
  if (bigDisk !== null) {
    table.push(['create 1 TiB disk (in-process createDisk)', `${bigDisk.createInProcessMs.toFixed(1)} ms`])
    table.push(['create 1 TiB disk (`ukai disk create --size 1T`, whole CLI)', `${bigDisk.createCliMs.toFixed(0)} ms`])
    table.push(['open 1 TiB disk on the mount + read 4 KiB', `${bigDisk.openAndRead4KiBMs.toFixed(1)} ms`])
    table.push(['1 TiB disk metadata in ZooKeeper', `${bigDisk.zkMetadataBytes.toLocaleString('en-US')} bytes (${formatBytes(bigDisk.zkMetadataBytes)}, ${formatBytes(bigDisk.blockSizeBytes)} blocks)`])
  }
  return table.toString()
}
