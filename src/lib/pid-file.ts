// A daemon's pid file, written by the daemon itself in its own directory (a storage node's data
// dir), so whoever stops it finds the process that runs now — also one restarted by hand with
// another pid than the one recorded when it was first started (`ukai dev down` after the demo's
// "restart it with" line). Always read together with /proc/PID/cmdline before any signal: a
// stale file (the daemon was SIGKILLed) may name a pid reused by an unrelated process.
import fs from 'node:fs'
import path from 'node:path'

export const STORAGE_NODE_PID_FILE = 'storagenode.pid'

// Written atomically (a reader never sees half a number).
export function writePidFile (file: string, pid = process.pid): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${pid}.tmp`)
  fs.writeFileSync(tmp, `${pid}\n`)
  fs.renameSync(tmp, file)
}

// Removed only while it still names `pid` (a newer process of the same dir keeps its own).
export function removePidFile (file: string, pid = process.pid): void {
  if (readPidFile(file) === pid) fs.rmSync(file, { force: true })
}

export function readPidFile (file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim())
    return Number.isInteger(pid) && pid > 0 ? pid : null
  } catch {
    return null
  }
}
