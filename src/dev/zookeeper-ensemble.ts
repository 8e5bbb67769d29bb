// A private replicated ZooKeeper for dev clusters and tests (issue 11 part 6): N members (3 by
// default) on 127.0.0.1, each in its own directory with its own myid, client port and quorum
// and election ports, started like the single server of zookeeper.ts (Debian's jars, no init
// scripts):
//   DIR/member-1/zoo.cfg  DIR/member-1/data/myid  DIR/member-1/zookeeper.log   … member-N
// The connect string lists every member, so a client rides through the loss of any one.
// Heap: three JVMs on a 2-core dev machine; a member's heap is capped at 128 MiB (measured: a
// member of an idle dev cluster resides at ~60-70 MiB RSS with the serial GC).
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { freePort } from './free-port'
import { stopLogged, startError, type LoggedProcess } from './processes'
import type { StopOptions } from './pids'
import {
  ZK_START_TIMEOUT_MS, ZK_TICK_TIME_MS, checkZooKeeperInstalled, fourLetterWord, portFreeWithin, spawnZooKeeper, waitForImok, zooCfg
} from './zookeeper'

const MEMBER_HEAP_MB_MAX = 128
export const ENSEMBLE_SIZES = [1, 3, 5] as const
const PORT_RELEASE_WAIT_MS = 10_000
const SRVR_TIMEOUT_MS = 1_000

export interface EnsembleMemberSpec { id: number, dir: string, clientPort: number, quorumPort: number, electionPort: number }

export interface EnsembleMember {
  readonly id: number          // its myid, 1..N
  readonly port: number        // client port
  readonly pid: number
  readonly argv: string[]
  readonly dir: string
  readonly logFile: string
  readonly spec: EnsembleMemberSpec
  readonly proc: LoggedProcess   // how it ended, while we are its parent
}

export interface ZooKeeperEnsemble {
  readonly connectString: string // 127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
  readonly members: EnsembleMember[]
  readonly dir: string
}

export interface EnsembleOptions {
  dir: string
  size?: number              // default 3
  detached?: boolean
  tickTimeMs?: number
  startTimeoutMs?: number
}

// Starts every member, then waits until each serves (a member serves only once a quorum formed
// and it knows its leader, so all must be started before any is waited for).
export async function startZooKeeperEnsemble (opts: EnsembleOptions): Promise<ZooKeeperEnsemble> {
  checkZooKeeperInstalled()
  const size = opts.size ?? 3
  if (!(ENSEMBLE_SIZES as readonly number[]).includes(size)) throw UkaiError.badArgument(`a ZooKeeper ensemble has ${ENSEMBLE_SIZES.join(', ')} members, not ${size}`)
  const dir = path.resolve(opts.dir)
  const taken = new Set<number>()
  const port = async (): Promise<number> => {
    for (;;) {
      const p = await freePort()
      if (!taken.has(p)) { taken.add(p); return p }
    }
  }
  const specs: EnsembleMemberSpec[] = []
  for (let id = 1; id <= size; id++) {
    specs.push({ id, dir: path.join(dir, `member-${id}`), clientPort: await port(), quorumPort: await port(), electionPort: await port() })
  }
  const servers: Record<string, string> = {}
  for (const s of specs) servers[`server.${s.id}`] = `127.0.0.1:${s.quorumPort}:${s.electionPort}`
  for (const s of specs) {
    fs.mkdirSync(path.join(s.dir, 'data'), { recursive: true })
    fs.writeFileSync(path.join(s.dir, 'data', 'myid'), `${s.id}\n`)
    fs.writeFileSync(path.join(s.dir, 'zoo.cfg'), zooCfg({ dataDir: path.join(s.dir, 'data'), port: s.clientPort, tickTimeMs: opts.tickTimeMs ?? ZK_TICK_TIME_MS, extra: { ...servers } }))
  }
  const started = specs.map(s => spawnMember(s, opts.detached))
  const results = await Promise.allSettled(started.map(async (m) => await waitServing(m, opts.startTimeoutMs)))
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) {
    await Promise.all(started.map(async (m) => await stopLogged(m, { termTimeoutMs: 2_000 }).catch(() => {})))
    throw failed.reason
  }
  return { connectString: specs.map(s => `127.0.0.1:${s.clientPort}`).join(','), members: started, dir }
}

// Starts one member again (after a crash or a stop) with its directory, data and ports.
export async function restartEnsembleMember (m: EnsembleMember, opts: { detached?: boolean, startTimeoutMs?: number } = {}): Promise<EnsembleMember> {
  for (const p of [m.spec.clientPort, m.spec.quorumPort, m.spec.electionPort]) {
    if (!await portFreeWithin(p, PORT_RELEASE_WAIT_MS)) throw new UkaiError('ZK_UNAVAILABLE', `ZooKeeper member ${m.id} in ${m.dir} cannot start: 127.0.0.1:${p} is in use`)
  }
  const again = spawnMember(m.spec, opts.detached)
  await waitServing(again, opts.startTimeoutMs)
  return again
}

export async function stopEnsemble (members: ReadonlyArray<{ pid: number, argv: readonly string[] }>, opts?: StopOptions): Promise<void> {
  await Promise.all(members.map(async (m) => await stopLogged(m, opts)))
}

// 'leader', 'follower', 'standalone', or null when the member does not answer (down, electing).
export async function memberMode (port: number): Promise<string | null> {
  try {
    const m = /^Mode: (\S+)/m.exec(await fourLetterWord('127.0.0.1', port, 'srvr', SRVR_TIMEOUT_MS))
    return m === null ? null : m[1]
  } catch {
    return null
  }
}

function spawnMember (s: EnsembleMemberSpec, detached?: boolean): EnsembleMember {
  const logFile = path.join(s.dir, 'zookeeper.log')
  const proc = spawnZooKeeper(path.join(s.dir, 'zoo.cfg'), logFile, s.dir, MEMBER_HEAP_MB_MAX, detached)
  return { id: s.id, port: s.clientPort, pid: proc.pid, argv: proc.argv, dir: s.dir, logFile, spec: s, proc }
}

async function waitServing (m: EnsembleMember, startTimeoutMs?: number): Promise<void> {
  const timeoutMs = startTimeoutMs ?? ZK_START_TIMEOUT_MS
  const failure = await waitForImok(m.proc, m.port, timeoutMs)
  if (failure !== null) {
    await stopLogged(m, { termTimeoutMs: 2_000 }).catch(() => {})
    throw startError('ZK_UNAVAILABLE', `ZooKeeper member ${m.id} in ${m.dir} did not start: ${failure}`, m.logFile)
  }
}
