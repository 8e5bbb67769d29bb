// PIDs of processes we started: is it alive, is it still *ours*, stop it with a deadline.
// A PID is only ever signalled after /proc/PID/cmdline was checked against the argv we started
// it with, so a PID reused by an unrelated process after ours died is never touched.
import fs from 'node:fs'
import { sleep } from '../lib/timers'

const POLL_INTERVAL_MS = 25
export const STOP_TERM_TIMEOUT_MS = 10_000
export const STOP_KILL_TIMEOUT_MS = 5_000

// The argv as the kernel reports it, or null when there is no such (non-zombie) process.
export function readCmdline (pid: number): string[] | null {
  let raw: string
  try {
    raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch {
    return null
  }
  if (raw === '') return null // zombie or kernel thread
  const argv = raw.split('\0')
  if (argv[argv.length - 1] === '') argv.pop()
  return argv
}

// Alive and not a zombie. (A zombie is dead: it only waits for its parent to reap it.)
export function isAlive (pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    // EPERM: exists but is not ours to signal; count it as alive (it is not ours either way).
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return false
  }
}

// True when PID is alive and runs the program we started: the same arguments after argv[0]
// (argv[0] itself may be rewritten by a launcher, e.g. `node` → /usr/bin/node).
export function isOurs (pid: number, argv: readonly string[]): boolean {
  if (!isAlive(pid)) return false
  const actual = readCmdline(pid)
  if (actual === null || actual.length !== argv.length) return false
  for (let i = 1; i < argv.length; i++) {
    if (actual[i] !== argv[i]) return false
  }
  return true
}

export async function waitForExit (pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await sleep(POLL_INTERVAL_MS)
  }
  return true
}

export interface StopOptions {
  termTimeoutMs?: number // SIGTERM, then SIGKILL after this long
  killTimeoutMs?: number // after SIGKILL, give up waiting after this long
  signal?: NodeJS.Signals // the first signal, SIGTERM by default
}

export type StopResult = 'not-running' | 'exited' | 'killed'

// Stop a process we started. Does nothing (returns 'not-running') if PID is gone or is now
// someone else's. Throws only if the process survives SIGKILL.
export async function stopProcess (pid: number, argv: readonly string[], opts: StopOptions = {}): Promise<StopResult> {
  const termTimeoutMs = opts.termTimeoutMs ?? STOP_TERM_TIMEOUT_MS
  const killTimeoutMs = opts.killTimeoutMs ?? STOP_KILL_TIMEOUT_MS
  if (!isOurs(pid, argv)) return 'not-running'
  if (!signal(pid, opts.signal ?? 'SIGTERM')) return 'not-running'
  signal(pid, 'SIGCONT') // a stopped (SIGSTOP) process only acts on the signal once continued
  if (await waitForExit(pid, termTimeoutMs)) return 'exited'
  if (!isOurs(pid, argv)) return 'exited'
  signal(pid, 'SIGKILL')
  if (await waitForExit(pid, killTimeoutMs)) return 'killed'
  throw new Error(`process ${pid} (${argv.join(' ')}) survived SIGKILL for ${killTimeoutMs} ms`)
}

// Send a signal if PID is still ours. Returns false when it was not (gone or reused).
export function signalIfOurs (pid: number, argv: readonly string[], sig: NodeJS.Signals): boolean {
  if (!isOurs(pid, argv)) return false
  return signal(pid, sig)
}

function signal (pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
}
