// Per-process figures from /proc: peak resident memory and CPU time used so far.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'

let clockTicksPerSec: number | undefined

function ticksPerSec (): number {
  if (clockTicksPerSec === undefined) {
    const out = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    clockTicksPerSec = Number.isFinite(out) && out > 0 ? out : 100
  }
  return clockTicksPerSec
}

// VmHWM ("high water mark" of the resident set) in bytes, or null if the process is gone.
export function peakRssBytes (pid: number): number | null {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m === null ? null : Number(m[1]) * 1024
  } catch {
    return null
  }
}

// User + system CPU seconds the process has used, or null if it is gone.
export function cpuSeconds (pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may contain spaces: fields are counted after its closing ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return (utime + stime) / ticksPerSec()
  } catch {
    return null
  }
}

// CPU use of several processes over an interval, as a percentage of one core.
export class CpuMeter {
  private readonly start = new Map<string, number | null>()
  private startedMs = 0

  constructor (private readonly pids: Record<string, number>) {}

  begin (): void {
    this.startedMs = Date.now()
    for (const [name, pid] of Object.entries(this.pids)) this.start.set(name, cpuSeconds(pid))
  }

  // name → % of one core since begin()
  end (): Record<string, number | null> {
    const elapsedSec = (Date.now() - this.startedMs) / 1000
    const out: Record<string, number | null> = {}
    for (const [name, pid] of Object.entries(this.pids)) {
      const a = this.start.get(name)
      const b = cpuSeconds(pid)
      out[name] = a == null || b === null || elapsedSec <= 0 ? null : Math.round((b - a) / elapsedSec * 100)
    }
    return out
  }
}
