// Is a path a mount point, and lazily unmounting a FUSE mount whose daemon is gone.
// Paths are compared as given (resolved, not realpath'd: stat on a dead FUSE mount fails).
import { execFile, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'

const UNMOUNT_TIMEOUT_MS = 10_000

// Mount points in /proc/self/mounts escape space, tab, newline and backslash as octal.
function unescapeMountField (s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

export interface MountEntry { source: string, target: string, fstype: string }

export function listMounts (): MountEntry[] {
  const text = fs.readFileSync('/proc/self/mounts', 'utf8')
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 3) continue
    out.push({ source: unescapeMountField(f[0]), target: unescapeMountField(f[1]), fstype: f[2] })
  }
  return out
}

export function isMounted (target: string): boolean {
  const want = path.resolve(target)
  return listMounts().some((m) => m.target === want)
}

// Mount points at or below DIR (deepest first, the order to unmount them in).
export function mountsUnder (dir: string): string[] {
  const base = path.resolve(dir)
  return listMounts()
    .map((m) => m.target)
    .filter((t) => t === base || t.startsWith(base + '/'))
    .sort((a, b) => b.length - a.length)
}

function run (cmd: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: UNMOUNT_TIMEOUT_MS }, (err, _stdout, stderr) => {
      resolve(err === null ? null : `${cmd} ${args.join(' ')}: ${String(stderr).trim() || err.message}`)
    })
  })
}

// Lazy unmount: `fusermount -uz`, falling back to `umount -l`. No-op if not mounted.
export async function unmount (target: string): Promise<void> {
  const p = path.resolve(target)
  if (!isMounted(p)) return
  const errors: string[] = []
  const e1 = await run('fusermount', ['-uz', p])
  if (e1 !== null) errors.push(e1)
  if (!isMounted(p)) return
  const e2 = await run('umount', ['-l', p])
  if (e2 !== null) errors.push(e2)
  if (!isMounted(p)) return
  throw new UkaiError('BUSY', `could not unmount ${p}: ${errors.join('; ')}`)
}

// Synchronous best effort, for process 'exit' handlers.
export function unmountSync (target: string): void {
  const p = path.resolve(target)
  if (!isMounted(p)) return
  spawnSync('fusermount', ['-uz', p], { stdio: 'ignore', timeout: UNMOUNT_TIMEOUT_MS })
  if (isMounted(p)) spawnSync('umount', ['-l', p], { stdio: 'ignore', timeout: UNMOUNT_TIMEOUT_MS })
}
