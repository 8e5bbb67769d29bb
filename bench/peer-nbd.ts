// qemu-nbd serving a local raw file on a Unix socket: the C ceiling of the NBD path, the peer of
// UKAI's own NBD export (`ukai mount --nbd-dir`). fio reaches both the same way, with its nbd
// engine (libnbd), so the ratio ukai-nbd / qemu-nbd is what UKAI's export and replication cost.
//
// qemu-nbd runs in the foreground as our child (stopped by PID): --persistent so the fill job's
// disconnect does not end it, --shared so fio's four jobs (four connections) are all served, and
// the default cache mode (writeback: the page cache, flushes honoured), as the storage nodes use.
import fs from 'node:fs'
import path from 'node:path'
import { spawnLogged, stopLogged } from '../src/dev/processes'
import { isAlive } from '../src/dev/pids'

export const NBD_EXPORT = 'bench'

export interface QemuNbd {
  readonly pid: number
  readonly socket: string
  readonly uri: string
  stop (): Promise<void>
}

export function nbdUnixUri (exportName: string, socket: string): string {
  return `nbd+unix:///${exportName}?socket=${socket}`
}

// Until FILE is a Unix socket; fails early when the process that should create it died.
export async function waitForSocket (file: string, opts: { pid?: number, timeoutMs?: number, what: string }): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000)
  for (;;) {
    try { if (fs.lstatSync(file).isSocket()) return } catch {}
    if (opts.pid !== undefined && !isAlive(opts.pid)) throw new Error(`${opts.what} exited before ${file} appeared`)
    if (Date.now() > deadline) throw new Error(`${opts.what}: ${file} did not appear within ${opts.timeoutMs ?? 30_000} ms`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export async function startQemuNbd (opts: { dir: string, sizeBytes: number, connections: number }): Promise<QemuNbd> {
  fs.mkdirSync(opts.dir, { recursive: true })
  const image = path.join(opts.dir, 'disk.raw')
  fs.writeFileSync(image, '')
  fs.truncateSync(image, opts.sizeBytes)
  const socket = path.join(opts.dir, 'qemu-nbd.sock')
  const logFile = path.join(opts.dir, 'qemu-nbd.log')
  const argv = ['qemu-nbd', '--persistent', `--shared=${opts.connections}`, '--format=raw', `--export-name=${NBD_EXPORT}`, `--socket=${socket}`, image]
  const proc = spawnLogged({ argv, logFile })
  const stop = async (): Promise<void> => { await stopLogged(proc, { termTimeoutMs: 5_000 }) }
  try {
    await waitForSocket(socket, { pid: proc.pid, what: 'qemu-nbd' })
  } catch (err) {
    await stop()
    throw new Error(`${(err as Error).message}; log: ${fs.readFileSync(logFile, 'utf8').slice(-500)}`)
  }
  return { pid: proc.pid, socket, uri: nbdUnixUri(NBD_EXPORT, socket), stop }
}
