// What every target's part of the fio bench shares: the progress line, and running the four
// workloads (after one fill pass) on a file, an NBD export or an RBD image.
import { runFio, type FioEngine } from './fio'
import { WORKLOADS, fillJob, timedJob, type BenchSettings } from './jobs'
import { CpuMeter } from './proc-stats'
import { formatBytes, formatFio, type TargetName, type TargetRun } from './report'
import type { BigDiskResult } from './big-disk'

const MIB = 1024 * 1024

// ---- progress -------------------------------------------------------------------------------

export class Progress {
  private done = 0
  constructor (private readonly total: number) {}

  start (target: string, what: string): void {
    this.done++
    const n = String(this.done).padStart(String(this.total).length)
    process.stdout.write(`[${n}/${this.total}] ${target.padEnd(11)} ${what.padEnd(22)} … `)
  }

  finish (text: string): void { process.stdout.write(`${text}\n`) }
}

// ---- running the workloads on one target ----------------------------------------------------

// `filename`: the file, or with `engine` a label for the NBD export or RBD image.
export async function runWorkloads (target: TargetName, filename: string, settings: BenchSettings, pids: Record<string, number>, progress: Progress, run: TargetRun, engine?: FioEngine): Promise<void> {
  progress.start(target, `fill ${formatBytes(settings.fileSizeBytes)} (1M seq)`)
  run.fill = await runFio(fillJob(filename, settings, engine))
  progress.finish(`${(run.fill.main.bytesPerSec / MIB).toFixed(0)} MiB/s in ${(run.fill.wallMs / 1000).toFixed(1)} s`)
  for (const w of WORKLOADS) {
    progress.start(target, w.label)
    const meter = new CpuMeter(pids)
    meter.begin()
    try {
      const fio = await runFio(timedJob(w, filename, settings, engine))
      const cpuPercent = meter.end()
      run.workloads[w.id] = { fio, error: null, cpuPercent }
      const cpu = Object.entries(cpuPercent).map(([p, c]) => `${p} ${c ?? '-'}%`).join(', ')
      progress.finish(`${formatFio(fio, w).replace('\n', ', ')}${cpu === '' ? '' : `  [CPU ${cpu}]`}`)
    } catch (err) {
      run.workloads[w.id] = { fio: null, error: (err as Error).message, cpuPercent: meter.end() }
      progress.finish(`FAILED: ${(err as Error).message.split('\n')[0]}`)
    }
  }
}

export interface TargetExtras {
  memory: Record<string, number | null>
  bigDisk: BigDiskResult | null
  deaths: Array<{ name: string, pid: number, logTail: string }>
}

