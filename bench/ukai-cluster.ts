// A private UKAI cluster for benchmarks: one ZooKeeper, two storage nodes on one site (two
// processes), one mount agent, and a MetaStore session for admin calls — all under one temp dir,
// all stopped (and the mount unmounted) by stop(), which is safe to call more than once and after
// a partial start.
//
// BENCH_METRICS=1 runs every daemon with --metrics-listen on a loopback port and scrapes each
// /metrics every BENCH_METRICS_SCRAPE_SEC (default 5; Prometheus' default is 15) for as long as
// the cluster runs: the fio figures of two runs, one with and one without, give the cost of the
// metrics (issue 14: IOPS with metrics ≥ 0.97 × without).
import fs from 'node:fs'
import path from 'node:path'
import { MetaStore } from '../src/meta/store'
import { startZooKeeper, type ZooKeeperHandle } from '../src/dev/zookeeper'
import { makeDevTls } from '../src/dev/dev-tls'
import { openTlsDir, setClientTls } from '../src/storagenode/tls'
import { startMountAgent, startStorageNode, type MountAgentProcess, type StorageNodeProcess } from '../src/dev/processes'
import { unmount } from '../src/lib/mounts'
import { freePort } from '../src/dev/free-port'
import { envNumber } from './bench-env'
import { processZkAuth } from '../src/dev/process-zk-auth'

export const BENCH_SITE = 'site-a'
export const BENCH_HOST = 'hv-bench'

export interface UkaiClusterOptions {
  dir: string                    // everything lives below it
  nodeCount?: number             // default 2
  agentCpuProfileDir?: string    // profile the agent (bench/profiled-cli.ts), written here at exit
  nodeCpuProfileDir?: string     // profile every storage node (their whole life), written here at exit
  metrics?: boolean              // --metrics-listen on every daemon, scraped (default: BENCH_METRICS=1)
  agentArgs?: string[]           // more `ukai mount` arguments, e.g. --nbd-dir DIR
  nodeArgs?: string[]            // more `ukai storagenode` arguments, e.g. --bench-no-checksums
  tls?: boolean                  // mutual TLS between agent and nodes (default: on; BENCH_TLS=0 turns it off)
}

export interface UkaiCluster {
  readonly zk: ZooKeeperHandle
  readonly nodes: StorageNodeProcess[]
  readonly agent: MountAgentProcess // the current one (restartAgent replaces it)
  readonly meta: MetaStore
  readonly mountPoint: string
  readonly metricsAddresses: string[] // HOST:PORT of every daemon's /metrics (empty: metrics off)
  // Stop the agent (it flushes and unmounts) and start a new one, e.g. under the CPU profiler so a
  // profile covers only what runs from now on.
  restartAgent (opts?: { cpuProfileDir?: string }): Promise<void>
  stop (): Promise<void>
}

export async function startUkaiCluster (opts: UkaiClusterOptions): Promise<UkaiCluster> {
  const mountPoint = path.join(opts.dir, 'mnt')
  const nodes: StorageNodeProcess[] = []
  let zk: ZooKeeperHandle | undefined
  let agent: MountAgentProcess | undefined
  let meta: MetaStore | undefined
  let stopped: Promise<void> | undefined
  const metricsOn = opts.metrics ?? process.env.BENCH_METRICS === '1'
  const metricsAddresses: string[] = []
  const metricsArgs = async (): Promise<string[]> => {
    if (!metricsOn) return []
    const address = `127.0.0.1:${await freePort()}`
    metricsAddresses.push(address)
    return ['--metrics-listen', address]
  }
  let agentMetricsArgs: string[] = [...opts.agentArgs ?? []]
  let agentTlsDir: string | undefined
  let scraper: NodeJS.Timeout | undefined

  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      const errors: string[] = []
      const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
        try { await fn() } catch (err) { errors.push(`${what}: ${(err as Error).message}`) }
      }
      clearInterval(scraper)
      // The agent first (it flushes and unmounts), then the nodes, ZooKeeper last.
      if (agent !== undefined) { const a = agent; await attempt('stop mount agent', () => a.stop({ termTimeoutMs: 10_000 })) }
      await attempt('unmount', () => unmount(mountPoint))
      await meta?.close()
      await Promise.all(nodes.map(n => attempt(`stop node ${n.id}`, () => n.stop({ termTimeoutMs: 5_000 }))))
      if (zk !== undefined) { const z = zk; await attempt('stop ZooKeeper', () => z.stop({ termTimeoutMs: 5_000 })) }
      if (errors.length > 0) throw new Error(`cluster teardown: ${errors.join('; ')}`)
    })()
    return stopped
  }

  try {
    processZkAuth() // before any daemon starts: they inherit $UKAI_ZK_AUTH
    zk = await startZooKeeper({ dir: path.join(opts.dir, 'zk'), extraConfig: { forceSync: 'no' } })
    const connect = zk.connectString
    const nodeCount = opts.nodeCount ?? 2
    const tlsOn = opts.tls ?? process.env.BENCH_TLS !== '0'
    const tls = tlsOn ? await makeDevTls(opts.dir, { nodes: Array.from({ length: nodeCount }, (_, i) => `a${i + 1}`), agents: [BENCH_HOST] }) : undefined
    // This process's own clients (the relocation bench) talk to the nodes as the admin.
    setClientTls(tls === undefined ? { kind: 'insecure' } : { kind: 'tls', files: openTlsDir(tls.adminDir) })
    agentTlsDir = tls?.agentDir(BENCH_HOST)
    // The nodes run on the agent's host (as a hypervisor's own disks do): its reads short-circuit.
    for (let i = 1; i <= nodeCount; i++) {
      const extraArgs = ['--host', BENCH_HOST, ...opts.nodeArgs ?? [], ...await metricsArgs()]
      nodes.push(await withProfiler(opts.nodeCpuProfileDir, () =>
        startStorageNode({ dir: path.join(opts.dir, `node-a${i}`), id: `a${i}`, site: BENCH_SITE, zk: connect, capacity: '50GiB', tlsDir: tls?.nodeDir(`a${i}`), extraArgs })))
    }
    meta = await MetaStore.connect(connect, { auth: processZkAuth() })
    agentMetricsArgs.push(...await metricsArgs())
    agent = await withProfiler(opts.agentCpuProfileDir, () =>
      startMountAgent({ dir: path.join(opts.dir, 'agent'), mountPoint, host: BENCH_HOST, site: BENCH_SITE, zk: connect, tlsDir: agentTlsDir, extraArgs: agentMetricsArgs }))
    if (metricsOn) {
      scraper = setInterval(() => {
        for (const a of metricsAddresses) fetch(`http://${a}/metrics`).then(async r => await r.text()).catch(() => {})
      }, envNumber('BENCH_METRICS_SCRAPE_SEC', 5) * 1000)
      scraper.unref()
    }
  } catch (err) {
    await stop().catch(() => {})
    throw err
  }
  const startedZk = zk
  const restartAgent = async (r: { cpuProfileDir?: string } = {}): Promise<void> => {
    if (agent !== undefined) await agent.stop({ termTimeoutMs: 10_000 })
    agent = undefined
    agent = await withProfiler(r.cpuProfileDir, () =>
      startMountAgent({ dir: path.join(opts.dir, 'agent'), mountPoint, host: BENCH_HOST, site: BENCH_SITE, zk: startedZk.connectString, tlsDir: agentTlsDir, extraArgs: agentMetricsArgs }))
  }
  const metaStore = meta
  return {
    zk: startedZk,
    nodes,
    get agent () {
      if (agent === undefined) throw new Error('the mount agent is not running')
      return agent
    },
    meta: metaStore,
    mountPoint,
    metricsAddresses,
    restartAgent,
    stop
  }
}

// src/dev spawns daemons with our environment minus NODE_OPTIONS, and as `node $UKAI_CLI_MAIN`:
// to profile a daemon (the agent, a node), point UKAI_CLI_MAIN at bench/profiled-cli.js for its spawn.
async function withProfiler<T> (cpuProfileDir: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (cpuProfileDir === undefined) return await fn()
  fs.mkdirSync(cpuProfileDir, { recursive: true })
  const saved = { main: process.env.UKAI_CLI_MAIN, dir: process.env.UKAI_BENCH_CPU_PROFILE_DIR }
  process.env.UKAI_CLI_MAIN = path.join(__dirname, 'profiled-cli.js')
  process.env.UKAI_BENCH_CPU_PROFILE_DIR = cpuProfileDir
  try {
    return await fn()
  } finally {
    restoreEnv('UKAI_CLI_MAIN', saved.main)
    restoreEnv('UKAI_BENCH_CPU_PROFILE_DIR', saved.dir)
  }
}

function restoreEnv (name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name]
  else process.env[name] = value
}
