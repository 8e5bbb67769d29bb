// Fault injection for tests (test/relocate-pull-retry.test.ts): when the node starts with this
// variable naming a path, each PullBlock it takes up (not a plan's probe) first reads that file. It may hold
//   `stall MS COUNT` — the next COUNT pulls block this node's event loop for MS ms (a node
//                       starved of CPU: it answers nothing, not even a Ping, meanwhile), or
//   `fail COUNT`     — the next COUNT pulls fail at once with UNAVAILABLE (a transient failure).
// COUNT counts pulls since the file last changed its text; an absent or empty file is no fault.
// Only tests set the variable; without it this costs one lookup per pull.
import fs from 'node:fs'
import { UkaiError } from '../errors'

export const FAULT_PULL_FILE_ENV = 'UKAI_FAULT_PULL_FILE'
const FAULT_STALL_MS_MAX = 60_000

const file = process.env[FAULT_PULL_FILE_ENV]
let seenText = ''
let used = 0

// Applies the fault to the pull being taken up now (a no-op without the variable).
export function pullFault (): void {
  if (file === undefined || file === '') return
  let text = ''
  try { text = fs.readFileSync(file, 'utf8').trim() } catch { text = '' }
  if (text !== seenText) { seenText = text; used = 0 }
  const [mode, a, b] = text.split(/\s+/)
  const count = Number(mode === 'stall' ? b : a)
  if (!(used < count)) return
  used++
  if (mode === 'fail') throw UkaiError.unavailable(`pull fault: failing this pull (${used} of ${count})`)
  if (mode === 'stall') {
    const untilMs = Date.now() + Math.min(Number(a), FAULT_STALL_MS_MAX)
    while (Date.now() < untilMs) { /* busy: the event loop answers nothing meanwhile */ }
  }
}
