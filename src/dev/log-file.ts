// Reading daemon log files: the tail (for error messages) and following a file until a line
// says the daemon is ready. Works the same whether the daemon is our child or long detached.
import fs from 'node:fs'
import { sleep } from '../lib/timers'

const TAIL_BYTES_MAX = 16 * 1024
const TAIL_LINES_DEFAULT = 30
const FOLLOW_POLL_INTERVAL_MS = 25
const FOLLOW_READ_BYTES_MAX = 256 * 1024

// The last lines of a file ('' when it does not exist), for error messages.
export function tailFile (file: string, lines = TAIL_LINES_DEFAULT): string {
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
  } catch {
    return ''
  }
  try {
    const size = fs.fstatSync(fd).size
    const length = Math.min(size, TAIL_BYTES_MAX)
    const buf = Buffer.alloc(length)
    fs.readSync(fd, buf, 0, length, size - length)
    const all = buf.toString('utf8').split('\n')
    if (all[all.length - 1] === '') all.pop()
    if (length < size) all.shift() // first line is probably cut
    return all.slice(-lines).join('\n')
  } finally {
    fs.closeSync(fd)
  }
}

export interface FollowOptions {
  fromOffset?: number // byte offset to start at (default 0)
  timeoutMs: number
  // Checked on every poll; a string is the reason to give up (e.g. 'exited with code 1').
  stillWaiting?: () => true | string
}

export type FollowResult<T> = { ok: true, value: T } | { ok: false, reason: string }

// Follow FILE line by line until MATCH returns something other than undefined.
export async function followFile<T> (file: string, match: (line: string) => T | undefined, opts: FollowOptions): Promise<FollowResult<T>> {
  const deadline = Date.now() + opts.timeoutMs
  let offset = opts.fromOffset ?? 0
  let partial = ''
  const buf = Buffer.alloc(FOLLOW_READ_BYTES_MAX)
  for (;;) {
    // Read before checking liveness: a daemon may log "ready" and exit right after.
    let fd: number | null = null
    try {
      fd = fs.openSync(file, 'r')
    } catch {}
    if (fd !== null) {
      try {
        for (;;) {
          const n = fs.readSync(fd, buf, 0, buf.length, offset)
          if (n === 0) break
          offset += n
          const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n')
          partial = lines.pop() ?? ''
          for (const line of lines) {
            const value = match(line)
            if (value !== undefined) return { ok: true, value }
          }
        }
      } finally {
        fs.closeSync(fd)
      }
    }
    const still = opts.stillWaiting?.() ?? true
    if (still !== true) return { ok: false, reason: still }
    if (Date.now() >= deadline) return { ok: false, reason: `not ready after ${opts.timeoutMs} ms` }
    await sleep(FOLLOW_POLL_INTERVAL_MS)
  }
}

// A pino JSON line whose msg is MSG, parsed; undefined for anything else.
export function pinoLineWithMsg (msg: string): (line: string) => Record<string, unknown> | undefined {
  return (line) => {
    if (!line.startsWith('{') || !line.includes(msg)) return undefined
    try {
      const obj = JSON.parse(line) as unknown
      if (obj !== null && typeof obj === 'object' && (obj as Record<string, unknown>).msg === msg) return obj as Record<string, unknown>
    } catch {}
    return undefined
  }
}
