// Fault injection for tests (test/relocate-copy-pace.test.ts): when the node starts with this
// variable naming a path, every Io write is answered that many ms late while the file at that
// path holds a number of ms — a node whose disk or queue makes the guests wait. The write itself
// is stored at once, in arrival order (only its answer waits), so overlapping writes keep their
// order; node-to-node copies (PullBlock reads the source, stores on the target) are not slowed,
// so a copy that slows down while the fault is on slowed itself. Read every FAULT_POLL_MS.
import fs from 'node:fs'

export const FAULT_WRITE_DELAY_MS_FILE_ENV = 'UKAI_FAULT_WRITE_DELAY_MS_FILE'
const FAULT_POLL_MS = 200
const FAULT_DELAY_MS_MAX = 60_000

let delayMs = 0
const file = process.env[FAULT_WRITE_DELAY_MS_FILE_ENV]
if (file !== undefined && file !== '') {
  const poll = (): void => {
    let ms = 0
    try { ms = Number(fs.readFileSync(file, 'utf8').trim()) } catch { ms = 0 }
    delayMs = Number.isFinite(ms) && ms > 0 ? Math.min(ms, FAULT_DELAY_MS_MAX) : 0
  }
  poll()
  setInterval(poll, FAULT_POLL_MS).unref()
}

// The delay to add to a write's answer now (0 without the fault).
export function faultWriteDelayMs (): number { return delayMs }
