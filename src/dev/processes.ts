// Spawning our daemons (and ZooKeeper) as child processes for dev clusters and tests.
//
// Contract with the daemons: pino JSON lines on stdout; ready when a line has "msg":"ready"
// (a storage node's carries "address":"127.0.0.1:PORT"); clean exit on SIGTERM (the mount agent
// unmounts itself). Output always goes to a log file; readiness is found by following that file,
// so the same code works for attached children and for detached ones that outlive us.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError, type UkaiErrorCode } from '../errors'
import { followFile, pinoLineWithMsg, tailFile } from './log-file'
import { isOurs, stopProcess, type StopOptions, type StopResult } from './pids'
import { isMounted, unmount } from '../lib/mounts'

export const READY_TIMEOUT_MS = 30_000
const EXIT_EVENT_GRACE_MS = 500

// ---- generic --------------------------------------------------------------------------------

export interface SpawnLoggedOptions {
  argv: string[]           // argv[0] is the program
  logFile: string          // stdout and stderr are appended here
  cwd?: string
  env?: NodeJS.ProcessEnv
  detached?: boolean       // outlive this process (own session, no handles kept)
}

export interface LoggedProcess {
  readonly pid: number
  readonly argv: string[]
  readonly logFile: string
  readonly logOffset: number // size of the log file before the process started
  // null while running (as far as we know), else how it ended
  exitReason (): string | null
}

// Non-detached children, so that they die with us (see killTrackedChildren).
const tracked = new Map<number, string[]>()
let exitHookInstalled = false

// Our daemons run plain compiled JavaScript: drop loader flags a parent (a test runner)
// put into NODE_OPTIONS, which would otherwise load into every child and slow its start.
export function daemonEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  return env
}

export function spawnLogged (opts: SpawnLoggedOptions): LoggedProcess {
  fs.mkdirSync(path.dirname(opts.logFile), { recursive: true })
  const fd = fs.openSync(opts.logFile, 'a')
  const logOffset = fs.fstatSync(fd).size
  let exit: string | null = null
  let pid: number | undefined
  try {
    const child = spawn(opts.argv[0], opts.argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? daemonEnv(),
      stdio: ['ignore', fd, fd],
      detached: opts.detached === true
    })
    pid = child.pid
    child.on('error', (err) => { exit = `failed to start: ${err.message}` })
    child.on('exit', (code, signal) => {
      exit = signal !== null ? `killed by ${signal}` : `exited with code ${code}`
      if (child.pid !== undefined) tracked.delete(child.pid)
    })
    if (opts.detached === true) child.unref()
  } finally {
    fs.closeSync(fd)
  }
  if (pid === undefined) {
    throw new UkaiError('INTERNAL', `could not spawn ${opts.argv[0]}: ${exit ?? 'no pid'}`)
  }
  if (opts.detached !== true) track(pid, opts.argv)
  const argv = opts.argv
  return { pid, argv, logFile: opts.logFile, logOffset, exitReason: () => exit }
}

// Wait until PROC logs a pino line with msg MSG; returns that line parsed. On timeout or early
// exit the process is stopped and an error with CODE and the log tail is thrown.
export async function waitForReadyLine (proc: LoggedProcess, what: string, opts: { msg?: string, timeoutMs?: number, code?: UkaiErrorCode } = {}): Promise<Record<string, unknown>> {
  const timeoutMs = opts.timeoutMs ?? READY_TIMEOUT_MS
  let goneSinceMs = 0
  const stillWaiting = (): true | string => {
    const exit = proc.exitReason()
    if (exit !== null) return exit
    if (isOurs(proc.pid, proc.argv)) return true
    // Gone, but our 'exit' event (with the exit code) may not have been delivered yet.
    if (goneSinceMs === 0) goneSinceMs = Date.now()
    return Date.now() - goneSinceMs < EXIT_EVENT_GRACE_MS ? true : 'exited'
  }
  const res = await followFile(proc.logFile, pinoLineWithMsg(opts.msg ?? 'ready'), { fromOffset: proc.logOffset, timeoutMs, stillWaiting })
  if (res.ok) return res.value
  await stopProcess(proc.pid, proc.argv, { termTimeoutMs: 2_000 }).catch(() => {})
  untrack(proc.pid)
  throw startError(opts.code ?? 'UNAVAILABLE', `${what} did not become ready: ${res.reason}`, proc.logFile)
}

export function startError (code: UkaiErrorCode, message: string, logFile: string): UkaiError {
  const tail = tailFile(logFile)
  return new UkaiError(code, `${message}\n--- last lines of ${logFile} ---\n${tail === '' ? '(empty)' : tail}`)
}

export async function stopLogged (proc: { pid: number, argv: readonly string[] }, opts?: StopOptions): Promise<StopResult> {
  try {
    return await stopProcess(proc.pid, proc.argv, opts)
  } finally {
    untrack(proc.pid)
  }
}

function track (pid: number, argv: string[]): void {
  tracked.set(pid, argv)
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', () => killTrackedChildren('SIGTERM'))
  }
}

function untrack (pid: number): void {
  tracked.delete(pid)
}

// Synchronously signal every non-detached child we started that is still running and still
// ours. Runs on process exit; test helpers also call it from their SIGINT/SIGTERM handlers.
export function killTrackedChildren (sig: NodeJS.Signals = 'SIGTERM'): number[] {
  const signalled: number[] = []
  for (const [pid, argv] of tracked) {
    try {
      if (isOurs(pid, argv)) {
        process.kill(pid, sig)
        signalled.push(pid)
      }
    } catch {}
  }
  return signalled
}

// ---- our daemons ----------------------------------------------------------------------------

// The repo root: the nearest ancestor with our package.json (works from src/ run by a TS loader
// and from dist/src/ alike).
export function repoRoot (): string {
  let dir = __dirname
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) {
      try {
        if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'ukai') return dir
      } catch {}
    }
    const up = path.dirname(dir)
    if (up === dir) throw new UkaiError('INTERNAL', `no ukai package.json above ${__dirname}`)
    dir = up
  }
}

// UKAI_CLI_MAIN overrides it (tests of this module run a stand-in daemon that way).
export function cliMainPath (): string {
  const override = process.env.UKAI_CLI_MAIN
  if (override !== undefined && override !== '') return path.resolve(override)
  return path.join(repoRoot(), 'dist', 'src', 'cli', 'main.js')
}

function nodeArgv (args: string[]): string[] {
  const main = cliMainPath()
  if (!fs.existsSync(main)) {
    throw new UkaiError('INTERNAL', `${main} does not exist: build first (npm run build, or bash scripts/setup.sh)`)
  }
  return [process.execPath, main, ...args]
}

// ---- ZooKeeper credentials of a daemon (issue 12) ----
// A file: --zk-auth FILE. null: --insecure-zk. undefined: neither (the daemon finds
// $UKAI_ZK_AUTH or /etc/ukai/zk-auth itself).
export type ZkAuthFileArg = string | null | undefined

function zkAuthArgs (file: ZkAuthFileArg): string[] {
  if (file === undefined) return []
  return file === null ? ['--insecure-zk'] : ['--zk-auth', file]
}

// A daemon's certificate dir, or the explicit (and logged) opt-out.
function tlsArgs (tlsDir: string | undefined): string[] {
  return tlsDir === undefined ? ['--insecure'] : ['--tls-dir', tlsDir]
}

export interface StorageNodeOptions {
  dir: string              // log file here; data in DIR/data unless dataDir is given
  id: string
  site: string
  zk: string               // connect string
  zkAuthFile?: ZkAuthFileArg
  dataDir?: string
  capacity?: string        // e.g. '10GiB'
  listen?: string          // default 127.0.0.1:0
  detached?: boolean
  readyTimeoutMs?: number
  extraArgs?: string[]
  tlsDir?: string          // the node's certificate (--tls-dir); absent: --insecure
}

export interface StorageNodeProcess {
  readonly id: string
  readonly site: string
  readonly address: string // host:port it serves on
  readonly pid: number
  readonly argv: string[]
  readonly dataDir: string
  readonly logFile: string
  stop (opts?: StopOptions): Promise<StopResult>
}

export async function startStorageNode (opts: StorageNodeOptions): Promise<StorageNodeProcess> {
  const dataDir = opts.dataDir ?? path.join(opts.dir, 'data')
  fs.mkdirSync(dataDir, { recursive: true })
  const args = ['storagenode', '--id', opts.id, '--site', opts.site, '--data-dir', dataDir,
    '--listen', opts.listen ?? '127.0.0.1:0', '--zk', opts.zk]
  args.push(...zkAuthArgs(opts.zkAuthFile))
  if (opts.capacity !== undefined) args.push('--capacity', opts.capacity)
  args.push(...tlsArgs(opts.tlsDir))
  if (opts.extraArgs !== undefined) args.push(...opts.extraArgs)
  const proc = spawnLogged({ argv: nodeArgv(args), logFile: path.join(opts.dir, 'storagenode.log'), cwd: opts.dir, detached: opts.detached })
  const ready = await waitForReadyLine(proc, `storage node ${opts.id}`, { timeoutMs: opts.readyTimeoutMs })
  const address = ready.address
  if (typeof address !== 'string' || !/^[^:]+:\d+$/.test(address)) {
    await stopLogged(proc)
    throw startError('INTERNAL', `storage node ${opts.id}: ready line has no "address":"host:port"`, proc.logFile)
  }
  return {
    id: opts.id,
    site: opts.site,
    address,
    pid: proc.pid,
    argv: proc.argv,
    dataDir,
    logFile: proc.logFile,
    stop: async (stopOpts) => await stopLogged(proc, stopOpts)
  }
}

export interface MountAgentOptions {
  dir: string              // log file here
  mountPoint: string       // created if missing
  host: string
  site: string
  zk: string
  zkAuthFile?: ZkAuthFileArg
  detached?: boolean
  readyTimeoutMs?: number
  extraArgs?: string[]
  tlsDir?: string          // the agent's certificate (--tls-dir); absent: --insecure
}

export interface MountAgentProcess {
  readonly host: string
  readonly site: string
  readonly mountPoint: string
  readonly pid: number
  readonly argv: string[]
  readonly logFile: string
  // SIGTERM (the agent unmounts itself), then a lazy unmount if it is still mounted.
  stop (opts?: StopOptions): Promise<StopResult>
}

export async function startMountAgent (opts: MountAgentOptions): Promise<MountAgentProcess> {
  if (isMounted(opts.mountPoint)) {
    throw new UkaiError('BUSY', `${opts.mountPoint} is already a mount point (a leftover? unmount it with fusermount -uz)`)
  }
  fs.mkdirSync(opts.mountPoint, { recursive: true })
  const args = ['mount', opts.mountPoint, '--host', opts.host, '--site', opts.site, '--zk', opts.zk, ...zkAuthArgs(opts.zkAuthFile), ...tlsArgs(opts.tlsDir)]
  if (opts.extraArgs !== undefined) args.push(...opts.extraArgs)
  const proc = spawnLogged({ argv: nodeArgv(args), logFile: path.join(opts.dir, 'mount.log'), cwd: opts.dir, detached: opts.detached })
  try {
    await waitForReadyLine(proc, `mount agent ${opts.host}`, { timeoutMs: opts.readyTimeoutMs })
  } catch (err) {
    if (isMounted(opts.mountPoint)) await unmount(opts.mountPoint).catch(() => {})
    throw err
  }
  return {
    host: opts.host,
    site: opts.site,
    mountPoint: opts.mountPoint,
    pid: proc.pid,
    argv: proc.argv,
    logFile: proc.logFile,
    stop: async (stopOpts) => await stopMountAgent(proc, opts.mountPoint, stopOpts)
  }
}

export interface ControllerProcessOptions { dir: string, host: string, zk: string, zkAuthFile?: ZkAuthFileArg, tlsDir?: string, detached?: boolean, readyTimeoutMs?: number, extraArgs?: string[] }
export interface ControllerProcess { readonly host: string, readonly pid: number, readonly argv: string[], readonly logFile: string, readonly pidFile: string, stop (opts?: StopOptions): Promise<StopResult> }

// A standalone controller candidate (`ukai controller`), its log and pid file in `dir`.
export async function startControllerProcess (opts: ControllerProcessOptions): Promise<ControllerProcess> {
  fs.mkdirSync(opts.dir, { recursive: true })
  const pidFile = path.join(opts.dir, 'controller.pid')
  const args = ['controller', '--host', opts.host, '--zk', opts.zk, ...zkAuthArgs(opts.zkAuthFile), ...tlsArgs(opts.tlsDir), '--pid-file', pidFile, ...(opts.extraArgs ?? [])]
  const proc = spawnLogged({ argv: nodeArgv(args), logFile: path.join(opts.dir, 'controller.log'), cwd: opts.dir, detached: opts.detached })
  await waitForReadyLine(proc, `controller ${opts.host}`, { timeoutMs: opts.readyTimeoutMs })
  return { host: opts.host, pid: proc.pid, argv: proc.argv, logFile: proc.logFile, pidFile, stop: async (stopOpts) => await stopLogged(proc, stopOpts) }
}

export async function stopMountAgent (proc: { pid: number, argv: readonly string[] }, mountPoint: string, opts?: StopOptions): Promise<StopResult> {
  try {
    return await stopLogged(proc, opts)
  } finally {
    if (isMounted(mountPoint)) await unmount(mountPoint)
  }
}

export interface WanProxyProcessOptions {
  logFile: string
  target: string           // host:port
  delayMs: number          // one-way, each direction
  mbps?: number            // per direction
  detached?: boolean
  readyTimeoutMs?: number
}

export interface WanProxyProcess { readonly address: string, readonly pid: number, readonly argv: string[], readonly logFile: string }

// `ukai dev wan-proxy` as its own process, so that it lives as long as the cluster it serves.
export async function startWanProxyProcess (opts: WanProxyProcessOptions): Promise<WanProxyProcess> {
  const args = ['dev', 'wan-proxy', '--listen', '127.0.0.1:0', '--target', opts.target, '--delay-ms', String(opts.delayMs)]
  if (opts.mbps !== undefined) args.push('--mbps', String(opts.mbps))
  const proc = spawnLogged({ argv: nodeArgv(args), logFile: opts.logFile, detached: opts.detached })
  const ready = await waitForReadyLine(proc, `WAN proxy to ${opts.target}`, { timeoutMs: opts.readyTimeoutMs })
  if (typeof ready.address !== 'string') {
    await stopLogged(proc)
    throw startError('INTERNAL', `WAN proxy to ${opts.target}: ready line has no "address"`, proc.logFile)
  }
  return { address: ready.address, pid: proc.pid, argv: proc.argv, logFile: proc.logFile }
}
