// Test fixtures: real ZooKeeper, real storage-node processes, real FUSE mount agents, each in its
// own temp dir (os.tmpdir()/ukai-test-*) on a free port. Every fixture registers its cleanup with
// t.teardown right after it exists: stop the process by PID, unmount if still mounted, remove the
// temp dir — also when the test failed. A process-level safety net (exit, SIGINT, SIGTERM) kills
// whatever children are left and lazily unmounts leftover mounts.
//
//   const zk = await startZk(t)
//   const node = await startNode(t, { zk, id: 'a1', site: 'site-a' })
//   const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
//   await node.kill('SIGKILL'); await node.restart()
//   const c = await startCluster(t, { sites: 2, nodesPerSite: 2 })
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { agentHost, nodeId, siteName } from '../../src/dev/cluster'
import { freePort } from '../../src/dev/free-port'
import { isMounted, unmount, unmountSync } from '../../src/lib/mounts'
import { isOurs, signalIfOurs, waitForExit } from '../../src/dev/pids'
import {
  cliMainPath, killTrackedChildren, startControllerProcess, startMountAgent, startStorageNode,
  type ControllerProcess, type MountAgentProcess, type StorageNodeProcess
} from '../../src/dev/processes'
import { startZooKeeper, type ZooKeeperHandle } from '../../src/dev/zookeeper'
import { memberMode, restartEnsembleMember, startZooKeeperEnsemble, stopEnsemble, type EnsembleMember } from '../../src/dev/zookeeper-ensemble'
import { processZkAuth } from '../../src/dev/process-zk-auth'
import { identityDir } from './tls'

// The part of a tap Test the fixtures need.
export interface TestLike {
  teardown (fn: () => unknown): void
  comment (...args: unknown[]): void
}

const KILL_WAIT_MS = 10_000
const BIND_ATTEMPTS_MAX = 3
const TEMP_PREFIX = 'ukai-test-'

// ---- safety net ----------------------------------------------------------------------------

const liveMounts = new Set<string>()
const liveTempDirs = new Set<string>()
let safetyNetInstalled = false

function installSafetyNet (): void {
  if (safetyNetInstalled) return
  safetyNetInstalled = true
  const cleanupSync = (): void => {
    killTrackedChildren('SIGKILL')
    for (const m of liveMounts) {
      try { unmountSync(m) } catch {}
    }
    for (const d of liveTempDirs) {
      try { fs.rmSync(d, { recursive: true, force: true }) } catch {}
    }
  }
  process.on('exit', cleanupSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanupSync()
      process.exit(128 + (os.constants.signals[sig] ?? 0))
    })
  }
}

export function makeTempDir (t: TestLike, label: string): string {
  installSafetyNet()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${TEMP_PREFIX}${label}-`))
  liveTempDirs.add(dir)
  t.teardown(async () => await guard(t, `remove ${dir}`, async () => { await removeTempDir(dir) }))
  return dir
}

async function removeTempDir (dir: string): Promise<void> {
  for (const m of liveMounts) {
    if (m.startsWith(dir + '/') && isMounted(m)) await unmount(m)
  }
  await fs.promises.rm(dir, { recursive: true, force: true })
  liveTempDirs.delete(dir)
}

// A teardown must not throw: tap drops the remaining teardowns of the test when one does.
async function guard (t: TestLike, what: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn()
  } catch (err) {
    t.comment(`teardown: ${what} failed: ${(err as Error).stack ?? String(err)}`)
  }
}

// Signal the process if it is still ours; for signals that end it, wait until it is gone.
async function killOurs (pid: number, argv: readonly string[], signal: NodeJS.Signals): Promise<void> {
  if (!signalIfOurs(pid, argv, signal)) return
  if (signal === 'SIGSTOP' || signal === 'SIGCONT' || signal === 'SIGUSR1' || signal === 'SIGUSR2' || signal === 'SIGHUP') return
  if (!await waitForExit(pid, KILL_WAIT_MS)) throw new Error(`pid ${pid} still alive ${KILL_WAIT_MS} ms after ${signal}`)
}

type ZkRef = string | { connectString: string }
const connectStringOf = (zk: ZkRef): string => typeof zk === 'string' ? zk : zk.connectString

// ---- ZooKeeper -----------------------------------------------------------------------------

export interface ZkFixture {
  readonly connectString: string // with an ensemble: every member, comma-separated
  readonly port: number          // with an ensemble: member 1's client port
  readonly pid: number
  readonly dir: string
  readonly logFile: string
  kill (signal?: NodeJS.Signals): Promise<void> // default SIGKILL
  restart (): Promise<void>                      // same dir, data and port
  stop (): Promise<void>
  readonly members: ZkMemberFixture[] // with { ensemble: N }: its N members, else []
  leader (): Promise<ZkMemberFixture> // with an ensemble: the member srvr calls leader (waits for one)
}

export interface ZkMemberFixture {
  readonly id: number
  readonly port: number
  readonly pid: number
  readonly logFile: string
  mode (): Promise<string | null>               // srvr's Mode: leader, follower, or null (not serving)
  kill (signal?: NodeJS.Signals): Promise<void> // default SIGKILL
  restart (): Promise<void>                     // same dir, data and ports; resolves once it serves
}

const LEADER_WAIT_MS = 30_000

export async function startZk (t: TestLike, opts: { tickTimeMs?: number, ensemble?: number } = {}): Promise<ZkFixture> {
  processZkAuth() // every daemon and CLI of this test process runs with ZooKeeper ACLs on
  if (opts.ensemble !== undefined && opts.ensemble > 1) return await startZkEnsemble(t, opts.ensemble, opts.tickTimeMs)
  const dir = makeTempDir(t, 'zk')
  let zk: ZooKeeperHandle = await startZooKeeper({ dir, tickTimeMs: opts.tickTimeMs })
  t.teardown(async () => await guard(t, `stop ZooKeeper pid ${zk.pid}`, async () => { await zk.stop() }))
  const port = zk.port
  return {
    get connectString () { return zk.connectString },
    get pid () { return zk.pid },
    port,
    dir,
    get logFile () { return zk.logFile },
    kill: async (signal = 'SIGKILL') => { await killOurs(zk.pid, zk.argv, signal) },
    restart: async () => {
      await zk.stop()
      zk = await startZooKeeper({ dir, port, tickTimeMs: opts.tickTimeMs })
    },
    stop: async () => { await zk.stop() },
    members: [],
    leader: async () => { throw new Error('a single ZooKeeper has no leader: startZk(t, { ensemble: 3 })') }
  }
}

async function startZkEnsemble (t: TestLike, size: number, tickTimeMs?: number): Promise<ZkFixture> {
  const dir = makeTempDir(t, 'zk-ensemble')
  const ens = await startZooKeeperEnsemble({ dir, size, tickTimeMs })
  const live: EnsembleMember[] = [...ens.members]
  t.teardown(async () => await guard(t, `stop the ZooKeeper ensemble (pids ${live.map(m => m.pid).join(' ')})`, async () => { await stopEnsemble(live) }))
  const members: ZkMemberFixture[] = live.map((_, i) => ({
    id: live[i].id,
    port: live[i].port,
    get pid () { return live[i].pid },
    get logFile () { return live[i].logFile },
    mode: async () => await memberMode(live[i].port),
    kill: async (signal = 'SIGKILL') => { await killOurs(live[i].pid, live[i].argv, signal) },
    restart: async () => {
      await stopEnsemble([live[i]])
      live[i] = await restartEnsembleMember(live[i])
    }
  }))
  const leader = async (): Promise<ZkMemberFixture> => {
    const deadline = Date.now() + LEADER_WAIT_MS
    for (;;) {
      for (const m of members) if (await m.mode() === 'leader') return m
      if (Date.now() > deadline) throw new Error(`no ZooKeeper member calls itself leader after ${LEADER_WAIT_MS} ms`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
  return {
    connectString: ens.connectString,
    port: live[0].port,
    get pid () { return live[0].pid },
    dir,
    get logFile () { return live[0].logFile },
    kill: async (signal = 'SIGKILL') => { for (const m of members) await m.kill(signal) },
    restart: async () => {
      await stopEnsemble(live)
      // All members at once: none serves before a quorum is back.
      const started = await Promise.all(live.map(async (m) => await restartEnsembleMember(m)))
      started.forEach((m, i) => { live[i] = m })
    },
    stop: async () => { await stopEnsemble(live) },
    members,
    leader
  }
}

// ---- storage nodes -------------------------------------------------------------------------

export interface NodeFixture {
  readonly id: string
  readonly site: string
  readonly pid: number
  readonly address: string
  readonly dataDir: string
  readonly dir: string
  readonly logFile: string
  kill (signal?: NodeJS.Signals): Promise<void>                // default SIGKILL
  restart (opts?: { samePort?: boolean }): Promise<void>       // same id, data dir; same port by default
  stop (): Promise<void>
}

// insecure: the node runs --insecure (default: TLS with a certificate of the test CA, helpers/tls.ts).
// tlsDir: its certificate dir instead of the test CA's for its id (a node on "another host").
export interface StartNodeOptions { zk: ZkRef, id: string, site: string, capacity?: string, extraArgs?: string[], insecure?: boolean, tlsDir?: string }

export async function startNode (t: TestLike, opts: StartNodeOptions): Promise<NodeFixture> {
  const dir = makeTempDir(t, `node-${opts.id}`)
  const tlsDir = opts.insecure === true ? undefined : opts.tlsDir ?? await identityDir({ role: 'node', name: opts.id })
  const base = { dir, id: opts.id, site: opts.site, zk: connectStringOf(opts.zk), zkAuthFile: processZkAuth().file, capacity: opts.capacity, extraArgs: opts.extraArgs, tlsDir }
  let node: StorageNodeProcess = await startNodeOnFreePort(base)
  t.teardown(async () => await guard(t, `stop node ${opts.id} pid ${node.pid}`, async () => { await node.stop() }))
  return {
    id: opts.id,
    site: opts.site,
    get pid () { return node.pid },
    get address () { return node.address },
    dataDir: node.dataDir,
    dir,
    get logFile () { return node.logFile },
    kill: async (signal = 'SIGKILL') => { await killOurs(node.pid, node.argv, signal) },
    restart: async (r = {}) => {
      const listen = r.samePort === false ? undefined : node.address
      await node.stop()
      node = await startStorageNode({ ...base, listen })
    },
    stop: async () => { await node.stop() }
  }
}

// A port below the ephemeral range, so that restart() can reuse it (see src/dev/free-port.ts);
// another one if someone took it between the check and the bind.
async function startNodeOnFreePort (opts: Parameters<typeof startStorageNode>[0]): Promise<StorageNodeProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startStorageNode({ ...opts, listen: `127.0.0.1:${await freePort()}` })
    } catch (err) {
      if (attempt >= BIND_ATTEMPTS_MAX || !/EADDRINUSE|address already in use/i.test(String((err as Error).message))) throw err
    }
  }
}

// ---- mount agents --------------------------------------------------------------------------

export interface AgentFixture {
  readonly host: string
  readonly site: string
  readonly pid: number
  readonly mountPoint: string
  readonly dir: string
  readonly logFile: string
  kill (signal?: NodeJS.Signals): Promise<void> // default SIGKILL; the mount stays (dead) until restart/teardown
  restart (): Promise<void>                     // unmounts a dead mount first
  stop (): Promise<void>                        // SIGTERM, then unmount if still mounted
}

export interface StartAgentOptions { zk: ZkRef, host: string, site: string, extraArgs?: string[], insecure?: boolean, tlsDir?: string }

export async function startAgent (t: TestLike, opts: StartAgentOptions): Promise<AgentFixture> {
  const dir = makeTempDir(t, `agent-${opts.host}`)
  const mountPoint = path.join(dir, 'mnt')
  liveMounts.add(mountPoint)
  const tlsDir = opts.insecure === true ? undefined : opts.tlsDir ?? await identityDir({ role: 'agent', name: opts.host })
  const base = { dir, mountPoint, host: opts.host, site: opts.site, zk: connectStringOf(opts.zk), zkAuthFile: processZkAuth().file, extraArgs: opts.extraArgs, tlsDir }
  let agent: MountAgentProcess = await startMountAgent(base)
  t.teardown(async () => await guard(t, `stop agent ${opts.host} pid ${agent.pid}`, async () => { await agent.stop() }))
  return {
    host: opts.host,
    site: opts.site,
    get pid () { return agent.pid },
    mountPoint,
    dir,
    get logFile () { return agent.logFile },
    kill: async (signal = 'SIGKILL') => { await killOurs(agent.pid, agent.argv, signal) },
    restart: async () => {
      await agent.stop() // also unmounts a mount left by a killed agent
      agent = await startMountAgent(base)
    },
    stop: async () => { await agent.stop() }
  }
}

// ---- standalone controllers -----------------------------------------------------------------

export interface ControllerFixture {
  readonly host: string
  readonly pid: number
  readonly logFile: string
  readonly pidFile: string
  kill (signal?: NodeJS.Signals): Promise<void> // default SIGKILL
  restart (): Promise<void>
  stop (): Promise<void>                        // SIGTERM: leaves the election cleanly
}

export async function startController (t: TestLike, opts: { zk: ZkRef, host: string, extraArgs?: string[] }): Promise<ControllerFixture> {
  const dir = makeTempDir(t, `controller-${opts.host}`)
  const tlsDir = await identityDir({ role: 'agent', name: opts.host })  // a controller talks to nodes as an agent
  const base = { dir, host: opts.host, zk: connectStringOf(opts.zk), zkAuthFile: processZkAuth().file, tlsDir, extraArgs: opts.extraArgs }
  let c: ControllerProcess = await startControllerProcess(base)
  t.teardown(async () => await guard(t, `stop controller ${opts.host} pid ${c.pid}`, async () => { await c.stop() }))
  return {
    host: opts.host,
    get pid () { return c.pid },
    get logFile () { return c.logFile },
    get pidFile () { return c.pidFile },
    kill: async (signal = 'SIGKILL') => { await killOurs(c.pid, c.argv, signal) },
    restart: async () => { await c.stop(); c = await startControllerProcess(base) },
    stop: async () => { await c.stop() }
  }
}

// ---- a whole cluster -----------------------------------------------------------------------

export interface ClusterFixture {
  zk: ZkFixture
  sites: string[]         // site-a, site-b, …
  nodes: NodeFixture[]    // a1, a2, b1, b2, … (sorted by id)
  agents: AgentFixture[]  // hv-a on site-a, hv-b on site-b, …
  node (id: string): NodeFixture
  agent (site: string): AgentFixture
}

// agentArgs: extra arguments of every agent (e.g. ['--no-controller'] where a test repairs by hand).
export interface StartClusterOptions { sites?: number, nodesPerSite?: number, agents?: boolean, capacity?: string, agentArgs?: string[] }

export async function startCluster (t: TestLike, opts: StartClusterOptions = {}): Promise<ClusterFixture> {
  const siteCount = opts.sites ?? 2
  const nodesPerSite = opts.nodesPerSite ?? 2
  const zk = await startZk(t)
  const sites = Array.from({ length: siteCount }, (_, s) => siteName(s))
  const nodeStarts: Array<Promise<NodeFixture>> = []
  for (let s = 0; s < siteCount; s++) {
    for (let n = 0; n < nodesPerSite; n++) {
      nodeStarts.push(startNode(t, { zk, id: nodeId(s, n), site: sites[s], capacity: opts.capacity }))
    }
  }
  const nodes = await allOrFirstError(nodeStarts)
  nodes.sort((a, b) => a.id.localeCompare(b.id))
  const agents = opts.agents === false
    ? []
    : await allOrFirstError(sites.map(async (site, s) => await startAgent(t, { zk, host: agentHost(s), site, extraArgs: opts.agentArgs })))
  return {
    zk,
    sites,
    nodes,
    agents,
    node: (id) => {
      const found = nodes.find((n) => n.id === id)
      if (found === undefined) throw new Error(`no node ${id} in this cluster (${nodes.map((n) => n.id).join(' ')})`)
      return found
    },
    agent: (site) => {
      const found = agents.find((a) => a.site === site)
      if (found === undefined) throw new Error(`no agent on ${site}`)
      return found
    }
  }
}

// Like Promise.all, but waits for every start (each registered its own teardown) before throwing.
async function allOrFirstError<T> (ps: Array<Promise<T>>): Promise<T[]> {
  const results = await Promise.allSettled(ps)
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) throw failed.reason
  return results.map((r) => (r as PromiseFulfilledResult<T>).value)
}

// ---- skipping ------------------------------------------------------------------------------

// Why tests needing `ukai <command>` cannot run here, or null when they can.
export function missingCli (command: string): string | null {
  const main = cliMainPath()
  if (!fs.existsSync(main)) return `${main} does not exist (not built yet?)`
  const r = spawnSync(process.execPath, [main, command, '--help'], { encoding: 'utf8', timeout: 15_000 })
  if (r.status !== 0) return `'ukai ${command}' is not available in ${main} (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n')[0] ?? ''}`
  return null
}

export function fuseUnavailable (): string | null {
  if (!fs.existsSync('/dev/fuse')) return '/dev/fuse does not exist'
  return null
}

export { isMounted, isOurs, processZkAuth }
