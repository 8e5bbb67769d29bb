// `ukai dev demo` (what `npm run demo` runs): a two-site cluster 20 ms apart and a short tour of
// what UKAI is for, driven through the same commands an operator types — a disk created with
// qemu-img on site A's mount and written there; site B reading it across the WAN; a snapshot;
// `ukai relocate --to site-b` while the disk stays open; site B reading locally afterwards; the
// write lease moving to site B; an export of the snapshot; a storage node killed under a writer;
// a tenant with a quota, working through an agent's tenant API.
import { createHash } from 'node:crypto'
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { MetaStore } from '../meta/store'
import { readZkAuthFile } from '../meta/credentials'
import { formatBytes, plural } from '../units'
import { summarizeDisk } from '../admin/disk-summary'
import { checkHealth, formatHealth } from '../admin/health'
import { openTlsDir, setClientTls } from '../storagenode/tls'
import { ClusterInfo, devDown, devUp, readCluster } from './cluster'
import { devTlsLayout } from './dev-tls'
import { signalIfOurs } from './pids'
import { cliMainPath, daemonEnv } from './processes'

const MiB = 1024 * 1024
const WAN_LATENCY_MS = 20
const WAN_MBPS = 400
const DATA_BYTES = 64 * MiB
const PROBE_READS = 20

function say (text: string): void { process.stdout.write(`\n== ${text}\n`) }
function show (text: string): void { process.stdout.write(`   ${text}\n`) }
function sha (data: Buffer): string { return createHash('sha256').update(data).digest('hex').slice(0, 16) }

// Mean latency of 4 KiB reads at spread offsets of an open file, in ms.
function readLatencyMs (fd: number, sizeBytes: number): number {
  const buf = Buffer.alloc(4096)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < PROBE_READS; i++) fs.readSync(fd, buf, 0, buf.length, Math.floor((i * 7919 % PROBE_READS) * sizeBytes / PROBE_READS / 4096) * 4096)
  return Number(process.hrtime.bigint() - t0) / 1e6 / PROBE_READS
}

// One agent's per-disk series of `disk` from its /metrics, without histogram buckets.
async function diskMetricLines (address: string | undefined, disk: string): Promise<string[]> {
  if (address === undefined) return ['(this agent serves no metrics)']
  try {
    const res = await fetch(`http://${address}/metrics`, { signal: AbortSignal.timeout(5000) })
    const text = await res.text()
    return text.split('\n').filter(l => l.startsWith('ukai_disk_') && l.includes(`disk="${disk}"`) && !l.includes('_bucket{'))
  } catch (err) {
    return [`(scrape failed: ${(err as Error).message})`]
  }
}

// A tenant's tour: its certificate holds no ZooKeeper credentials, so everything it does goes
// through an agent's tenant API, which checks the disk's tenant and the quota (atomically with
// the change, in ZooKeeper). Refusals are printed, not hidden: they are the point.
function tenantTour (dir: string, site: string, api: string, adminDisk: string, ukai: (...args: string[]) => void): void {
  const tenant = `class-${Date.now().toString(36).slice(-5)}`
  const tenantTls = path.join(dir, 'tls', `tenant-${tenant}`)
  say(`tenants: ${tenant} may keep 2 disks, 2 GiB in all, at ${site}; its certificate manages only its own disks`)
  ukai('tenant', 'create', tenant, '--sites', site)
  ukai('tenant', 'quota', tenant, '--capacity', '2G', '--disks', '2')
  ukai('cert', 'issue', '--tenant', tenant, '--ca', devTlsLayout(dir).caDir, '--out', tenantTls)
  const env = { ...daemonEnv(), UKAI_TLS_DIR: tenantTls, UKAI_API: api }
  const asTenant = (expect: 'ok' | 'refused', ...args: string[]): void => {
    process.stdout.write(`\n   $ UKAI_TLS_DIR=${tenantTls} UKAI_API=${api} ukai ${args.join(' ')}\n`)
    const r = spawnSync(process.execPath, [cliMainPath(), ...args], { encoding: 'utf8', env })
    process.stdout.write(r.stdout)
    if (r.status !== 0) show(`refused (exit ${String(r.status)}): ${r.stderr.trim()}`)
    if ((r.status === 0) !== (expect === 'ok')) show(`UNEXPECTED: ${expect === 'ok' ? 'refused' : 'allowed'}`)
  }
  asTenant('ok', 'disk', 'create', 'homework', '--size', '1G')
  asTenant('refused', 'disk', 'create', 'dataset', '--size', '4G')
  asTenant('refused', 'disk', 'info', adminDisk)
  ukai('tenant', 'list')
}

export async function runDemo (dir: string): Promise<void> {
  // A previous demo killed one of its nodes: start from a fresh cluster every time.
  if (readCluster(dir) !== null) {
    say(`stopping the previous dev cluster in ${dir}`)
    await devDown({ dir })
  }
  say(`starting a local cluster in ${dir}: ZooKeeper, 2 sites × 2 storage nodes, one mount agent per site,\n   the sites ${WAN_LATENCY_MS} ms apart (delaying proxies, ${WAN_MBPS} Mbit/s per link)`)
  const info: ClusterInfo = await devUp({ dir, sites: 2, nodesPerSite: 2, detach: true, wanLatencyMs: WAN_LATENCY_MS, wanMbps: WAN_MBPS })
  // The demo's own steps (the relocation it runs here) talk to the nodes as the cluster's admin.
  if (info.tlsDir !== undefined) setClientTls({ kind: 'tls', files: openTlsDir(info.tlsDir) })
  for (const n of info.nodes) show(`storage node ${n.id} at ${n.site}  ${n.address}  (pid ${n.pid})  metrics http://${n.metricsAddress ?? '?'}/metrics`)
  for (const a of info.agents) show(`agent ${a.host} at ${a.site}  mounted on ${a.mountPoint}  (pid ${a.pid})  metrics http://${a.metricsAddress ?? '?'}/metrics`)

  const adminEnv = { ...daemonEnv(), UKAI_ZK: info.zk.connectString, ...(info.zkAuthFile === null ? {} : { UKAI_ZK_AUTH: info.zkAuthFile }), ...(info.tlsDir === undefined ? {} : { UKAI_TLS_DIR: info.tlsDir }) }
  const ukai = (...args: string[]): void => {
    process.stdout.write(`\n   $ ukai ${args.join(' ')}\n`)
    execFileSync(process.execPath, [cliMainPath(), ...args], { stdio: 'inherit', env: adminEnv })
  }
  say(`secure by default: every storage-node channel is mutual TLS (the cluster CA and one certificate per\n   daemon under ${path.join(dir, 'tls')}), every znode has an ACL (credentials in ${info.zkAuthFile ?? '(none: --insecure-zk)'})`)
  say('the controller: the agents elect one (ZooKeeper); it repairs, re-replicates and finishes relocations nobody runs')
  ukai('controller', 'status')
  const [a, b] = info.agents
  const meta = await MetaStore.connect(info.zk.connectString, { auth: info.zkAuthFile === null ? null : readZkAuthFile(info.zkAuthFile) })
  try {
    const name = `vm-${Date.now().toString(36)}`
    const fileA = path.join(a.mountPoint, name)
    const fileB = path.join(b.mountPoint, name)
    say(`qemu-img create -f raw ${fileA} 1G   (a thin disk, placed at ${a.site})`)
    execFileSync('qemu-img', ['create', '-f', 'raw', fileA, '1G'], { stdio: 'inherit' })

    say(`write ${formatBytes(DATA_BYTES)} on site A, read it back on site B`)
    const data = Buffer.alloc(DATA_BYTES)
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i ^ 0x5a5a5a5a, i)
    let t0 = Date.now()
    const fd = fs.openSync(fileA, 'r+')
    fs.writeSync(fd, data, 0, data.length, 0)
    fs.fsyncSync(fd)
    show(`wrote ${formatBytes(data.length)} in ${Date.now() - t0} ms on ${a.host}`)
    const fdB = fs.openSync(fileB, 'r+')
    const readB = Buffer.alloc(data.length)
    fs.readSync(fdB, readB, 0, readB.length, 0)
    show(`${b.host} reads the same bytes: sha256 ${sha(readB)} ${readB.equals(data) ? '= what site A wrote' : 'DIFFERS'}`)
    const farMs = readLatencyMs(fdB, DATA_BYTES)
    show(`a 4 KiB read on ${b.host} takes ${farMs.toFixed(1)} ms: every block is ${WAN_LATENCY_MS} ms away, at ${a.site}`)

    say('a snapshot: an O(1) commit, whatever the disk size; it shows up read-only on every mount')
    ukai('snapshot', 'create', `${name}@before-move`)
    show(`ls ${path.join(b.mountPoint, '.snapshots')}: ${fs.readdirSync(path.join(b.mountPoint, '.snapshots')).join(' ')}`)

    say(`move the data next to ${b.host} while the disk stays open: copy near, flip, drop far`)
    ukai('relocate', name, '--to', b.site, '--wait')
    const nearMs = readLatencyMs(fdB, DATA_BYTES)
    fs.readSync(fdB, readB, 0, readB.length, 0)
    show(`a 4 KiB read on ${b.host} now takes ${nearMs.toFixed(2)} ms (was ${farMs.toFixed(1)} ms); the bytes: ${readB.equals(data) ? 'unchanged' : 'DIFFER'}`)
    ukai('disk', 'info', name)

    say(`write on site B while A still has the disk open: the lease moves to ${b.host}`)
    t0 = Date.now()
    fs.writeSync(fdB, Buffer.alloc(4096, 0xbb), 0, 4096, 0)
    let s = await summarizeDisk(meta, name)
    show(`hand-over took ${Date.now() - t0} ms; lease holder now ${s.leaseHolder} (epoch ${s.leaseEpoch}); site A's old epoch is refused by every node`)

    say('export the snapshot (a sparse raw image): what the disk held before the move, not the later write')
    const image = path.join(dir, `${name}@before-move.img`)
    ukai('export', `${name}@before-move`, image)
    const exported = Buffer.alloc(DATA_BYTES)
    const fdImage = fs.openSync(image, 'r')
    fs.readSync(fdImage, exported, 0, exported.length, 0)
    fs.closeSync(fdImage)
    show(`${image}: ${formatBytes(fs.statSync(image).size)}, the first ${formatBytes(DATA_BYTES)} ${exported.equals(data) ? 'equal the bytes written on site A' : 'DIFFER'}`)
    fs.rmSync(image)

    const victim = info.nodes.find(n => s.replicasPerNode[n.id] !== undefined)
    if (victim !== undefined) {
      say(`kill -9 storage node ${victim.id} (pid ${victim.pid}) and keep writing on site B`)
      signalIfOurs(victim.pid, victim.argv, 'SIGKILL')
      fs.writeSync(fdB, Buffer.alloc(8 * MiB, 0xcc), 0, 8 * MiB, 16 * MiB)
      fs.fsyncSync(fdB)
      s = await summarizeDisk(meta, name)
      show(`writes went on; ${plural(s.staleBlocks, 'block')} now ${s.staleBlocks === 1 ? 'has' : 'have'} a stale replica on ${victim.id}, which reads will never pick`)
      const check = Buffer.alloc(8 * MiB)
      fs.readSync(fd, check, 0, check.length, 16 * MiB)
      show(`site A reads the new bytes: ${check.every(x => x === 0xcc) ? 'yes' : 'NO'}`)
      say('what ukai health says now')
      show('$ ukai health --detail')
      for (const line of formatHealth(await checkHealth(meta), true).trimEnd().split('\n')) show(line)
      // The node's own command line (host name, peer addresses and all), on the port it had.
      const args = victim.argv.slice(2).map((a, i, all) => all[i - 1] === '--listen' ? victim.address : a)
      show(`(restart it with: node dist/src/cli/main.js ${args.join(' ')})`)
    }
    say(`what ${b.host}'s metrics endpoint says of ${name} (Prometheus text format; histogram buckets left out)`)
    show(`$ curl http://${b.metricsAddress ?? '?'}/metrics`)
    for (const line of await diskMetricLines(b.metricsAddress, name)) show(line)
    fs.closeSync(fd)
    fs.closeSync(fdB)
    if (info.tlsDir !== undefined && a.apiAddress !== undefined) tenantTour(dir, a.site, a.apiAddress, name, ukai)
  } finally {
    await meta.close()
  }
  say('the cluster keeps running; try:')
  show(`export UKAI_ZK=${info.zk.connectString}`)
  if (info.zkAuthFile !== null) show(`export UKAI_ZK_AUTH=${info.zkAuthFile}   # the cluster's ZooKeeper credentials (mode 0600)`)
  if (info.tlsDir !== undefined) show(`export UKAI_TLS_DIR=${info.tlsDir}`)
  show('node dist/src/cli/main.js top                 # the dashboard (q quits); or: npx ukai top')
  show('node dist/src/cli/main.js disk list')
  show('node dist/src/cli/main.js site list')
  show(`node dist/src/cli/main.js relocate DISK --to ${a.site} --wait`)
  show(`ls -l ${a.mountPoint} ${b.mountPoint}`)
  show(`curl -s http://${a.metricsAddress ?? '?'}/metrics | grep ukai_disk_   # ${a.host}'s per-disk metrics (Prometheus; also /healthz)`)
  show(`node dist/src/cli/main.js dev down --dir ${dir}   # stop everything and unmount`)
}
