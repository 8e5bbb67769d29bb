// `ukai dev up` / `ukai dev down`: a whole cluster on this machine, in one directory.
//
//   DIR/cluster.json        what runs: pids and the argv each was started with
//   DIR/zk/                 ZooKeeper config, data, log; with --zk-ensemble N: DIR/zk/member-1 … N
//   DIR/zk-auth             ZooKeeper credentials (user:password, mode 0600) every daemon and
//                           the CLI use (export UKAI_ZK_AUTH=DIR/zk-auth); kept across restarts
//   DIR/nodes/a1/           storage node a1 of site-a: storagenode.log, data/
//   DIR/agents/hv-a/        mount agent of site-a: mount.log
//   DIR/mnt/site-a/         its FUSE mount point
//   DIR/wan/hv-a-b1.log     with --wan-latency-ms: the WAN proxy between agent hv-a and node b1
//   DIR/wan/nodes-site-a-b1.log  … and between the nodes of site-a and node b1 (node-to-node copies)
//
// Sites are site-a, site-b, …; nodes a1, a2, b1, …; one agent per site on host hv-a, hv-b, ….
// With a WAN latency, every agent reaches the nodes of other sites through its own delaying proxy
// (one `ukai dev wan-proxy` process per link, passed to the agent as --node-address), and the
// nodes of a site reach the nodes of other sites through one proxy per far node (--peer-address).
// Every node and agent serves its metrics and readiness on a loopback port of its own
// (--metrics-listen; `metricsAddress` in cluster.json: http://ADDRESS/metrics and /healthz).
// cluster.json is rewritten after every process that starts, so a `dev down` after a crash in
// the middle of `dev up` still finds everything to stop.
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { freePort } from './free-port'
import { isMounted, mountsUnder, unmount } from '../lib/mounts'
import { STORAGE_NODE_PID_FILE, readPidFile } from '../lib/pid-file'
import { isOurs, readCmdline, type StopResult } from './pids'
import { validateWanOptions } from './wan-proxy'
import { makeDevTls } from './dev-tls'
import { startMountAgent, startStorageNode, startWanProxyProcess, stopLogged, stopMountAgent } from './processes'
import { startZooKeeper } from './zookeeper'
import { ENSEMBLE_SIZES, startZooKeeperEnsemble } from './zookeeper-ensemble'
import { createZkAuthFile, readZkAuthFile } from '../meta/credentials'

export const CLUSTER_FILE = 'cluster.json'
export const DEV_ZK_AUTH_FILE = 'zk-auth'
const SITES_MAX = 26
const NODES_PER_SITE_MAX = 16

// With an ensemble, pid/argv/logFile are member 1's and `members` lists all of them.
export interface ClusterZk { connectString: string, pid: number, argv: string[], dir: string, logFile: string, members?: ClusterZkMember[] }
export interface ClusterZkMember { id: number, port: number, pid: number, argv: string[], dir: string, logFile: string }
// metricsAddress: HOST:PORT of the daemon's /metrics and /healthz (absent in older files).
export interface ClusterNode { id: string, site: string, address: string, pid: number, argv: string[], dataDir: string, logFile: string, metricsAddress?: string }
// apiAddress: HOST:PORT of the agent's tenant API (--api-listen; absent with --insecure and in older files).
export interface ClusterAgent { host: string, site: string, mountPoint: string, pid: number, argv: string[], logFile: string, metricsAddress?: string, apiAddress?: string }
// A WAN link: agent `host` reaches storage node `node` (at `target`) through `address`.
export interface ClusterProxy { host: string, node: string, address: string, target: string, delayMs: number, mbps: number | null, pid: number, argv: string[], logFile: string }

export interface ClusterInfo {
  version: 1
  dir: string
  detached: boolean
  startedAt: string // ISO time
  zk: ClusterZk
  nodes: ClusterNode[]
  agents: ClusterAgent[]
  proxies: ClusterProxy[]  // absent in files of older versions: read as []
  zkAuthFile: string | null // the credentials file; null: --insecure-zk (absent in older files: null)
  // The admin certificate for the CLI (UKAI_TLS_DIR); absent: the cluster runs --insecure.
  tlsDir?: string
}

export interface DevUpOptions {
  dir: string
  sites?: number            // default 2
  nodesPerSite?: number     // default 2
  detach?: boolean          // children outlive this process
  capacity?: string         // per storage node, e.g. '20GiB'
  agents?: boolean          // start one mount agent per site (default true)
  readyTimeoutMs?: number
  wanLatencyMs?: number     // one-way delay between an agent and the nodes of other sites
  wanMbps?: number          // bandwidth cap of those links, per direction
  insecureZk?: boolean      // no ZooKeeper credentials, world-open znodes (default: DIR/zk-auth)
  zkEnsemble?: number       // ZooKeeper members: 1 (default) or 3 (or 5), each its own JVM
  insecure?: boolean        // no TLS anywhere (logged by every daemon); default: a CA and certificates in DIR/tls
}

export function siteName (i: number): string { return `site-${letter(i)}` }
export function nodeId (site: number, n: number): string { return `${letter(site)}${n + 1}` }
export function agentHost (site: number): string { return `hv-${letter(site)}` }

function letter (i: number): string {
  if (!Number.isInteger(i) || i < 0 || i >= SITES_MAX) throw UkaiError.badArgument(`site index ${i} out of range 0..${SITES_MAX - 1}`)
  return String.fromCharCode(97 + i)
}

export function readCluster (dir: string): ClusterInfo | null {
  const file = path.join(path.resolve(dir), CLUSTER_FILE)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  let info: ClusterInfo
  try {
    info = JSON.parse(text) as ClusterInfo
  } catch (err) {
    throw new UkaiError('BAD_ARGUMENT', `${file} is not valid JSON: ${(err as Error).message}`)
  }
  if (info.version !== 1 || typeof info.zk !== 'object' || !Array.isArray(info.nodes) || !Array.isArray(info.agents)) {
    throw new UkaiError('BAD_ARGUMENT', `${file} is not a ukai cluster file (version 1)`)
  }
  if (!Array.isArray(info.proxies)) info.proxies = []
  if (info.zkAuthFile === undefined) info.zkAuthFile = null
  return info
}

function writeCluster (info: ClusterInfo): void {
  const file = path.join(info.dir, CLUSTER_FILE)
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, JSON.stringify(info, null, 2) + '\n')
  fs.renameSync(tmp, file)
}

// PIDs of cluster.json that still run what we started.
export function livePids (info: ClusterInfo): number[] {
  const all = [info.zk, ...(info.zk?.members ?? []), ...info.nodes, ...info.agents, ...info.proxies].filter((p) => p !== undefined && p.pid > 0)
  const restarted = info.nodes.map(restartedNode).filter((p): p is { pid: number, argv: string[] } => p !== null)
  return [...new Set([...all.filter((p) => isOurs(p.pid, p.argv)), ...restarted].map((p) => p.pid))]
}

export async function devUp (opts: DevUpOptions): Promise<ClusterInfo> {
  const dir = path.resolve(opts.dir)
  const sites = opts.sites ?? 2
  const nodesPerSite = opts.nodesPerSite ?? 2
  if (!Number.isInteger(sites) || sites < 1 || sites > SITES_MAX) throw UkaiError.badArgument(`sites must be 1..${SITES_MAX}, not ${sites}`)
  if (!Number.isInteger(nodesPerSite) || nodesPerSite < 1 || nodesPerSite > NODES_PER_SITE_MAX) {
    throw UkaiError.badArgument(`nodesPerSite must be 1..${NODES_PER_SITE_MAX}, not ${nodesPerSite}`)
  }
  if (opts.zkEnsemble !== undefined && !(ENSEMBLE_SIZES as readonly number[]).includes(opts.zkEnsemble)) {
    throw UkaiError.badArgument(`--zk-ensemble must be ${ENSEMBLE_SIZES.join(', ')} (a majority must survive), not ${opts.zkEnsemble}`)
  }
  if (opts.wanLatencyMs !== undefined) validateWanOptions({ delayMs: opts.wanLatencyMs, mbps: opts.wanMbps })
  else if (opts.wanMbps !== undefined) throw UkaiError.badArgument('a WAN bandwidth needs a WAN latency (--wan-latency-ms, 0 for none)')
  fs.mkdirSync(dir, { recursive: true })

  const previous = readCluster(dir)
  if (previous !== null) {
    const live = livePids(previous)
    if (live.length > 0) {
      throw UkaiError.alreadyExists(`a dev cluster is already running in ${dir} (pids ${live.join(' ')}); run 'ukai dev down' first`)
    }
    await devDown({ dir }) // stale: clear leftover mounts and the file
  }

  const detached = opts.detach === true
  const readyTimeoutMs = opts.readyTimeoutMs
  const zkAuthFile = opts.insecureZk === true ? null : devZkAuthFile(dir)
  const zk = await startDevZooKeeper(path.join(dir, 'zk'), opts.zkEnsemble ?? 1, detached)
  const info: ClusterInfo = {
    version: 1,
    dir,
    detached,
    startedAt: new Date().toISOString(),
    zk,
    nodes: [],
    agents: [],
    proxies: [],
    zkAuthFile
  }
  writeCluster(info)

  try {
    const metricsAddress = metricsAddresses()
    const planned = await planNodes(sites, nodesPerSite, opts.wanLatencyMs !== undefined)
    const tls = opts.insecure === true ? undefined : await makeDevTls(dir, { nodes: planned.map(p => p.id), agents: opts.agents === false ? [] : Array.from({ length: sites }, (_, s) => agentHost(s)) })
    if (tls !== undefined) { info.tlsDir = tls.adminDir; writeCluster(info) }
    // Node-to-node copies between sites cross the WAN too: one proxy per (site, node of another
    // site), shared by that site's nodes (as a site-to-site link is), started before the nodes
    // so that each node is told its peers' proxied addresses at start.
    const peerLinks = await settleAllValues(Array.from({ length: sites }, async (_, s) =>
      await startWanLinks(info, `nodes-${siteName(s)}`, siteName(s), planned, opts)))
    const nodeStarts: Array<Promise<void>> = []
    for (let s = 0; s < sites; s++) {
      for (const { id, address } of planned.filter(p => p.site === siteName(s))) {
        const metrics = await metricsAddress()
        nodeStarts.push(startStorageNode({
          dir: path.join(dir, 'nodes', id), id, site: siteName(s), zk: zk.connectString, zkAuthFile, capacity: opts.capacity, detached, readyTimeoutMs, tlsDir: tls?.nodeDir(id),
          // Each hypervisor's local disks are its site's nodes: the agent of that site reads them
          // directly (short-circuit), every other site's agent over gRPC (across the WAN proxy).
          listen: address, extraArgs: ['--host', agentHost(s), '--metrics-listen', metrics, ...peerLinks[s].flatMap(l => ['--peer-address', `${l.node}=${l.address}`])]
        }).then((node) => {
          info.nodes.push({ id: node.id, site: node.site, address: node.address, pid: node.pid, argv: node.argv, dataDir: node.dataDir, logFile: node.logFile, metricsAddress: metrics })
          writeCluster(info)
        }))
      }
    }
    await settleAll(nodeStarts)
    info.nodes.sort((a, b) => a.id.localeCompare(b.id))
    writeCluster(info)

    if (opts.agents !== false) {
      const agentStarts: Array<Promise<void>> = []
      for (let s = 0; s < sites; s++) {
        const host = agentHost(s)
        const metrics = await metricsAddress()
        // Every agent serves the tenant API (one per site): tenants' certificates need one.
        const api = tls === undefined ? undefined : `127.0.0.1:${await freePort()}`
        agentStarts.push(startWanLinks(info, host, siteName(s), info.nodes, opts).then(async (links) => await startMountAgent({
          dir: path.join(dir, 'agents', host), mountPoint: path.join(dir, 'mnt', siteName(s)), host, site: siteName(s), zk: zk.connectString, zkAuthFile, detached, readyTimeoutMs, tlsDir: tls?.agentDir(host),
          extraArgs: ['--metrics-listen', metrics, ...(api !== undefined ? ['--api-listen', api] : []), ...links.flatMap(l => ['--node-address', `${l.node}=${l.address}`])]
        })).then((agent) => {
          info.agents.push({ host: agent.host, site: agent.site, mountPoint: agent.mountPoint, pid: agent.pid, argv: agent.argv, logFile: agent.logFile, metricsAddress: metrics, ...(api !== undefined ? { apiAddress: api } : {}) })
          writeCluster(info)
        }))
      }
      await settleAll(agentStarts)
      info.agents.sort((a, b) => a.host.localeCompare(b.host))
      writeCluster(info)
    }
  } catch (err) {
    await devDown({ dir }).catch(() => {})
    throw err
  }
  return info
}

async function startDevZooKeeper (dir: string, members: number, detached: boolean): Promise<ClusterZk> {
  if (members === 1) {
    const zk = await startZooKeeper({ dir, detached })
    return { connectString: zk.connectString, pid: zk.pid, argv: zk.argv, dir: zk.dir, logFile: zk.logFile }
  }
  const ens = await startZooKeeperEnsemble({ dir, size: members, detached })
  const all = ens.members.map(m => ({ id: m.id, port: m.port, pid: m.pid, argv: m.argv, dir: m.dir, logFile: m.logFile }))
  return { connectString: ens.connectString, pid: all[0].pid, argv: all[0].argv, dir: ens.dir, logFile: all[0].logFile, members: all }
}

// The cluster's ZooKeeper credentials: made once (mode 0600), then kept, since the znodes in
// DIR/zk carry an ACL for exactly them.
function devZkAuthFile (dir: string): string {
  const file = path.join(dir, DEV_ZK_AUTH_FILE)
  if (fs.existsSync(file)) return readZkAuthFile(file).file
  return createZkAuthFile(file).file
}

// Free loopback ports for the daemons' metrics endpoints, each handed out once.
function metricsAddresses (): () => Promise<string> {
  const taken = new Set<number>()
  return async () => {
    for (;;) {
      const port = await freePort()
      if (taken.has(port)) continue
      taken.add(port)
      return `127.0.0.1:${port}`
    }
  }
}

interface PlannedNode { id: string, site: string, address: string }

// Node ids and sites; with WAN links also fixed listen addresses, known before the nodes start
// (a port is picked free; the node's start fails clearly in the rare case it was taken meanwhile).
async function planNodes (sites: number, nodesPerSite: number, fixedPorts: boolean): Promise<PlannedNode[]> {
  const out: PlannedNode[] = []
  for (let s = 0; s < sites; s++) {
    for (let n = 0; n < nodesPerSite; n++) {
      out.push({ id: nodeId(s, n), site: siteName(s), address: fixedPorts ? `127.0.0.1:${await freePort()}` : '127.0.0.1:0' })
    }
  }
  return out
}

// The WAN proxies from HOST (an agent, or 'nodes-SITE' for the nodes of SITE) to every node of
// another site, when asked for.
async function startWanLinks (info: ClusterInfo, host: string, site: string, nodes: Array<{ id: string, site: string, address: string }>, opts: DevUpOptions): Promise<ClusterProxy[]> {
  if (opts.wanLatencyMs === undefined) return []
  const delayMs = opts.wanLatencyMs
  const links = await settleAllValues(nodes.filter(n => n.site !== site).map(async (n) => {
    const p = await startWanProxyProcess({
      logFile: path.join(info.dir, 'wan', `${host}-${n.id}.log`), target: n.address, delayMs, mbps: opts.wanMbps, detached: info.detached, readyTimeoutMs: opts.readyTimeoutMs
    })
    const link: ClusterProxy = { host, node: n.id, address: p.address, target: n.address, delayMs, mbps: opts.wanMbps ?? null, pid: p.pid, argv: p.argv, logFile: p.logFile }
    info.proxies.push(link)
    writeCluster(info)
    return link
  }))
  info.proxies.sort((a, b) => a.host.localeCompare(b.host) || a.node.localeCompare(b.node))
  return links
}

async function settleAllValues<T> (ps: Array<Promise<T>>): Promise<T[]> {
  const results = await Promise.allSettled(ps)
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) throw failed.reason
  return results.map(r => (r as PromiseFulfilledResult<T>).value)
}

// The storage node now running on `n`'s data dir under another pid than the one recorded, or
// null. Its pid file alone is not enough (a SIGKILLed node leaves it, and the pid may be reused):
// the process must be a `storagenode` with that --data-dir.
function restartedNode (n: ClusterNode): { pid: number, argv: string[] } | null {
  const pid = readPidFile(path.join(n.dataDir, STORAGE_NODE_PID_FILE))
  if (pid === null || pid === n.pid) return null
  const argv = readCmdline(pid)
  if (argv === null || !argv.includes('storagenode')) return null
  const i = argv.indexOf('--data-dir')
  return i >= 0 && i + 1 < argv.length && path.resolve(argv[i + 1]) === path.resolve(n.dataDir) ? { pid, argv } : null
}

// Wait for every promise (so none is left running unobserved), then throw the first error.
async function settleAll (ps: Array<Promise<void>>): Promise<void> {
  const results = await Promise.allSettled(ps)
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed !== undefined) throw failed.reason
}

export interface DevDownResult {
  found: boolean                       // was there a cluster.json
  stopped: Array<{ what: string, pid: number, result: StopResult }>
  unmounted: string[]
}

// Stop exactly the processes cluster.json names (agents, then nodes, then ZooKeeper), unmount
// what is still mounted, remove cluster.json. Safe to run twice, and after a crash.
export async function devDown (opts: { dir: string }): Promise<DevDownResult> {
  const dir = path.resolve(opts.dir)
  const result: DevDownResult = { found: false, stopped: [], unmounted: [] }
  const info = readCluster(dir)
  if (info !== null) {
    result.found = true
    const errors: unknown[] = []
    const note = (what: string, pid: number) => (r: StopResult) => { result.stopped.push({ what, pid, result: r }) }
    const keep = (err: unknown) => { errors.push(err) }

    await Promise.all(info.agents.map(async (a) => {
      const mounted = isMounted(a.mountPoint)
      await stopMountAgent(a, a.mountPoint).then(note(`agent ${a.host}`, a.pid), keep)
      if (mounted && !isMounted(a.mountPoint)) result.unmounted.push(a.mountPoint)
    }))
    await Promise.all(info.proxies.map(async (p) => await stopLogged(p).then(note(`WAN proxy ${p.host} → ${p.node}`, p.pid), keep)))
    await Promise.all(info.nodes.map(async (n) => {
      await stopLogged(n).then(note(`node ${n.id}`, n.pid), keep)
      // Restarted by hand (the demo prints how): another pid than cluster.json's, found through
      // the pid file the node writes in its data dir.
      const again = restartedNode(n)
      if (again !== null) await stopLogged(again).then(note(`node ${n.id} (restarted)`, again.pid), keep)
    }))
    if (info.zk?.members !== undefined) {
      await Promise.all(info.zk.members.map(async (m) => await stopLogged(m).then(note(`zookeeper member ${m.id}`, m.pid), keep)))
    } else if (info.zk !== undefined) await stopLogged(info.zk).then(note('zookeeper', info.zk.pid), keep)
    if (errors.length > 0) throw errors[0] // cluster.json stays: run dev down again
  }
  // Mounts left by agents that died without unmounting, even without a cluster.json.
  for (const m of mountsUnder(path.join(dir, 'mnt'))) {
    await unmount(m)
    result.unmounted.push(m)
  }
  fs.rmSync(path.join(dir, CLUSTER_FILE), { force: true })
  return result
}
