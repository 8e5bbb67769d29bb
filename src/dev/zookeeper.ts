// A private single-node ZooKeeper for dev clusters and tests: Debian's zookeeper 3.8 jars run
// directly (no init scripts, no /var/lib/zookeeper), everything in one directory:
//   DIR/zoo.cfg  DIR/data/  DIR/zookeeper.log (stdout+stderr; slf4j-simple logs to stderr)
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { sleep } from '../lib/timers'
import { UkaiError } from '../errors'
import { isOurs, type StopOptions } from './pids'
import { spawnLogged, startError, stopLogged, type LoggedProcess } from './processes'
import { freePort, isPortFree } from './free-port'

const JAVA = '/usr/bin/java'
const ZOOKEEPER_JAR = '/usr/share/java/zookeeper.jar'
// zookeeper.jar's manifest Class-Path names its dependencies but only slf4j-api: without a
// binding it would log nothing. slf4j-simple (libslf4j-java, a zookeeper dependency) needs no
// configuration file and writes to stderr, which goes to our log file.
const SLF4J_BINDING_JAR = '/usr/share/java/slf4j-simple.jar'
const CLASSPATH = ['/etc/zookeeper/conf', ZOOKEEPER_JAR, SLF4J_BINDING_JAR].join(':')
const MAIN_CLASS = 'org.apache.zookeeper.server.quorum.QuorumPeerMain'
// -Xmx: a dev cluster's ZooKeeper holds kilobytes to megabytes; an ensemble runs three JVMs
// on one machine (see zookeeper-ensemble.ts), so each of those gets half this.
export const ZK_HEAP_MB_MAX = 256
const jvmFlags = (heapMbMax: number): string[] => [
  '-Xms32m', `-Xmx${heapMbMax}m`, '-XX:+UseSerialGC', '-Djava.awt.headless=true',
  '-Dorg.slf4j.simpleLogger.showDateTime=true',
  '-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd\'T\'HH:mm:ss.SSSZ'
]

export const ZK_TICK_TIME_MS = 500            // sessions may be 2..120 ticks: 1 s .. 60 s
export const ZK_MIN_SESSION_TIMEOUT_MS = 1_000
export const ZK_MAX_SESSION_TIMEOUT_MS = 60_000
export const ZK_START_TIMEOUT_MS = 30_000
const PORT_RELEASE_WAIT_MS = 5_000
const RUOK_TIMEOUT_MS = 1_000
const RUOK_POLL_INTERVAL_MS = 50
const BIND_RETRIES_MAX = 3
const FOUR_LETTER_REPLY_BYTES_MAX = 1024 * 1024

export interface ZooKeeperOptions {
  dir: string                // private: config, data and log live here (created if missing)
  port?: number              // default: a free port on 127.0.0.1
  detached?: boolean         // outlive this process (dev up --detach)
  tickTimeMs?: number
  startTimeoutMs?: number
  extraConfig?: Record<string, string | number> // more zoo.cfg lines, e.g. { forceSync: 'no' }
}

export interface ZooKeeperHandle {
  readonly connectString: string // '127.0.0.1:PORT'
  readonly port: number
  readonly pid: number
  readonly argv: string[]        // as started; what stopZooKeeper checks /proc/PID/cmdline against
  readonly dir: string
  readonly logFile: string
  stop (opts?: StopOptions): Promise<void>
}

export async function portFreeWithin (port: number, waitMs: number): Promise<boolean> {
  const deadline = Date.now() + waitMs
  for (;;) {
    if (await isPortFree(port)) return true
    if (Date.now() >= deadline) return false
    await sleep(200)
  }
}

export async function startZooKeeper (opts: ZooKeeperOptions): Promise<ZooKeeperHandle> {
  checkZooKeeperInstalled()
  const dir = path.resolve(opts.dir)
  const dataDir = path.join(dir, 'data')
  fs.mkdirSync(dataDir, { recursive: true })
  const cfgFile = path.join(dir, 'zoo.cfg')
  const logFile = path.join(dir, 'zookeeper.log')
  const timeoutMs = opts.startTimeoutMs ?? ZK_START_TIMEOUT_MS

  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? await freePort()
    // ruok on a port someone else serves would be answered by them: make sure it is free.
    // A predecessor on that port (a restart) may take a moment to let go of it.
    if (opts.port !== undefined && !await portFreeWithin(opts.port, PORT_RELEASE_WAIT_MS)) {
      throw new UkaiError('ZK_UNAVAILABLE', `ZooKeeper in ${dir} cannot start: 127.0.0.1:${opts.port} is already in use`)
    }
    fs.writeFileSync(cfgFile, zooCfg({ dataDir, port, tickTimeMs: opts.tickTimeMs ?? ZK_TICK_TIME_MS, extra: opts.extraConfig ?? {} }))
    const proc = spawnZooKeeper(cfgFile, logFile, dir, ZK_HEAP_MB_MAX, opts.detached)
    const failure = await waitForImok(proc, port, timeoutMs)
    if (failure === null) {
      return {
        connectString: `127.0.0.1:${port}`,
        port,
        pid: proc.pid,
        argv: proc.argv,
        dir,
        logFile,
        stop: async (stopOpts) => { await stopZooKeeper(proc, stopOpts) }
      }
    }
    await stopLogged(proc, { termTimeoutMs: 2_000 }).catch(() => {})
    // Someone took the port between freePort() and ZooKeeper's bind: try another one.
    const bindRace = opts.port === undefined && attempt < BIND_RETRIES_MAX && /Address already in use/i.test(readFrom(logFile, proc.logOffset))
    if (!bindRace) throw startError('ZK_UNAVAILABLE', `ZooKeeper in ${dir} did not start: ${failure}`, logFile)
  }
}

export function checkZooKeeperInstalled (): void {
  if (!fs.existsSync(ZOOKEEPER_JAR)) {
    throw new UkaiError('ZK_UNAVAILABLE', `${ZOOKEEPER_JAR} not found: install Debian's zookeeper package (bash scripts/setup.sh)`)
  }
}

// Stop a ZooKeeper we started (from a handle or from cluster.json): SIGTERM, SIGKILL after a
// deadline, wait for exit. Does nothing if the PID is gone or no longer runs our command line.
export async function stopZooKeeper (proc: { pid: number, argv: readonly string[] }, opts?: StopOptions): Promise<void> {
  await stopLogged(proc, opts)
}

export function spawnZooKeeper (cfgFile: string, logFile: string, cwd: string, heapMbMax: number, detached?: boolean): LoggedProcess {
  return spawnLogged({ argv: [JAVA, ...jvmFlags(heapMbMax), '-cp', CLASSPATH, MAIN_CLASS, cfgFile], logFile, cwd, detached })
}

export function zooCfg (o: { dataDir: string, port: number, tickTimeMs: number, extra: Record<string, string | number> }): string {
  const cfg: Record<string, string | number> = {
    tickTime: o.tickTimeMs,
    initLimit: 10,
    syncLimit: 5,
    dataDir: o.dataDir,
    clientPort: o.port,
    clientPortAddress: '127.0.0.1',
    maxClientCnxns: 0, // every node, agent and test connects from 127.0.0.1
    minSessionTimeout: Math.max(ZK_MIN_SESSION_TIMEOUT_MS, 2 * o.tickTimeMs),
    maxSessionTimeout: ZK_MAX_SESSION_TIMEOUT_MS,
    'admin.enableServer': 'false',
    '4lw.commands.whitelist': 'ruok,stat,mntr,srvr', // srvr: who leads an ensemble
    ...o.extra
  }
  return '# written by ukai src/dev/zookeeper.ts\n' + Object.entries(cfg).map(([k, v]) => `${k}=${v}`).join('\n') + '\n'
}

// null when ZooKeeper answered imok and serves requests, else why not.
export async function waitForImok (proc: LoggedProcess, port: number, timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  for (;;) {
    try {
      const reply = await fourLetterWord('127.0.0.1', port, 'ruok', RUOK_TIMEOUT_MS)
      if (reply.trim() === 'imok') {
        // imok only means "the process runs"; until the database is loaded stat says
        // "not currently serving requests". Ready means serving.
        const stat = await fourLetterWord('127.0.0.1', port, 'stat', RUOK_TIMEOUT_MS)
        if (!/^Mode: /m.test(stat)) {
          last = `imok, but stat says ${JSON.stringify(stat.trim().slice(0, 100))}`
        } else if (proc.exitReason() === null && isOurs(proc.pid, proc.argv)) {
          return null
        } else {
          last = 'imok, but not from our process'
        }
      } else {
        last = `ruok answered ${JSON.stringify(reply)}`
      }
    } catch (err) {
      last = `ruok: ${(err as Error).message}`
    }
    const exit = proc.exitReason() ?? (isOurs(proc.pid, proc.argv) ? null : 'exited')
    if (exit !== null) return `java ${exit}`
    if (Date.now() >= deadline) return `no imok after ${timeoutMs} ms (${last})`
    await sleep(RUOK_POLL_INTERVAL_MS)
  }
}

// Send a ZooKeeper four-letter command (ruok, stat, mntr) and return the whole reply.
export function fourLetterWord (host: string, port: number, cmd: string, timeoutMs = RUOK_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let bytes = 0
    const sock = net.connect({ host, port })
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error(`timed out after ${timeoutMs} ms`)))
    sock.on('connect', () => sock.end(cmd))
    sock.on('data', (d: Buffer) => {
      bytes += d.length
      if (bytes > FOUR_LETTER_REPLY_BYTES_MAX) sock.destroy(new Error('reply too large'))
      else chunks.push(d)
    })
    sock.on('error', reject)
    sock.on('close', (hadError) => { if (!hadError) resolve(Buffer.concat(chunks).toString('utf8')) })
  })
}

function readFrom (file: string, offset: number): string {
  try {
    const buf = fs.readFileSync(file)
    return buf.subarray(offset).toString('utf8')
  } catch {
    return ''
  }
}
