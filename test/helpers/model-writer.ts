// A writer for fault tests and the chaos bench: random writes through a file (a FUSE-mounted
// disk) kept in a byte-exact model, with every write's latency and failure recorded. A failed
// write leaves its range "unknown" (old or new bytes are both correct), so verify() compares
// only the bytes the model is sure of.
import fs from 'node:fs'
import { randomBytes, rng } from './model'

export interface WriterStats {
  writes: number
  bytesWritten: number     // acknowledged
  writesFailed: number
  failures: string[]       // the first few errors, with when they happened
  longestStallMs: number   // the slowest single write
  stalls: Array<{ atMs: number, ms: number }> // writes slower than stallReportMs
}

export interface VerifyResult { bytesVerified: number, bytesLost: number, firstMismatchAt: number | null }

export class ModelWriter {
  readonly model: Buffer
  private readonly known: Uint8Array // 1 = the model is sure of this byte
  private readonly rand: () => number
  private running: Promise<void> | null = null
  private stopping = false
  readonly stats: WriterStats = { writes: 0, bytesWritten: 0, writesFailed: 0, failures: [], longestStallMs: 0, stalls: [] }
  // The slowest write since the last window(), for per-fault figures; a write still in flight
  // counts with its age so far.
  private windowLongestMs = 0
  private inFlightSinceMs: number | null = null

  constructor (private readonly fh: fs.promises.FileHandle, sizeBytes: number, private readonly opts: { seed: number, maxWriteBytes?: number, pauseMs?: number, stallReportMs?: number }) {
    this.model = Buffer.alloc(sizeBytes)
    this.known = new Uint8Array(sizeBytes).fill(1)
    this.rand = rng(opts.seed)
  }

  // One write at a random place; recorded in the model (or as unknown when it failed).
  async writeOnce (): Promise<void> {
    const maxLen = this.opts.maxWriteBytes ?? 64 * 1024
    const len = 512 * (1 + Math.floor(this.rand() * (maxLen / 512)))
    const off = 512 * Math.floor(this.rand() * ((this.model.length - len) / 512))
    await this.write(off, randomBytes(this.rand, len))
  }

  // One write of `data` at `off`; true when it was acknowledged.
  async write (off: number, data: Buffer): Promise<boolean> {
    const len = data.length
    const t0 = Date.now()
    this.inFlightSinceMs = t0
    try {
      await this.fh.write(data, 0, len, off)
      data.copy(this.model, off)
      this.known.fill(1, off, off + len)
      this.stats.bytesWritten += len
      return true
    } catch (err) {
      this.stats.writesFailed++
      if (this.stats.failures.length < 10) this.stats.failures.push(`${new Date().toISOString()} write ${len}@${off}: ${(err as Error).message}`)
      this.known.fill(0, off, off + len)
      return false
    } finally {
      const ms = Date.now() - t0
      this.inFlightSinceMs = null
      this.windowLongestMs = Math.max(this.windowLongestMs, ms)
      this.stats.writes++
      this.stats.longestStallMs = Math.max(this.stats.longestStallMs, ms)
      if (ms >= (this.opts.stallReportMs ?? 1000)) this.stats.stalls.push({ atMs: t0, ms })
    }
  }

  // The slowest write since the previous call (starts a new window).
  window (): { longestStallMs: number } {
    const inFlightMs = this.inFlightSinceMs === null ? 0 : Date.now() - this.inFlightSinceMs
    const longestStallMs = Math.max(this.windowLongestMs, inFlightMs)
    this.windowLongestMs = 0
    return { longestStallMs }
  }

  start (): void {
    if (this.running !== null) return
    this.stopping = false
    this.running = (async () => {
      while (!this.stopping) {
        await this.writeOnce()
        if (this.opts.pauseMs !== undefined) await new Promise(resolve => setTimeout(resolve, this.opts.pauseMs))
      }
    })()
  }

  async stop (): Promise<void> {
    this.stopping = true
    await this.running
    this.running = null
  }

  // Reads the whole file back and compares it with the model where the model is sure.
  async verify (): Promise<VerifyResult> {
    const got = Buffer.alloc(this.model.length)
    const chunk = 1024 * 1024
    for (let off = 0; off < got.length; off += chunk) {
      const { bytesRead } = await this.fh.read(got, off, Math.min(chunk, got.length - off), off)
      if (bytesRead !== Math.min(chunk, got.length - off)) throw new Error(`short read at ${off}: ${bytesRead}`)
    }
    let bytesVerified = 0
    let bytesLost = 0
    let firstMismatchAt: number | null = null
    for (let i = 0; i < got.length; i++) {
      if (this.known[i] === 0) continue
      if (got[i] === this.model[i]) bytesVerified++
      else { bytesLost++; if (firstMismatchAt === null) firstMismatchAt = i }
    }
    return { bytesVerified, bytesLost, firstMismatchAt }
  }
}

export function isAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}
