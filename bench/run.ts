// `npm run bench`: fio on a local file, on a minimal Node FUSE passthrough, on a UKAI disk (FUSE
// file and NBD export), on qemu-nbd and on the peers (GlusterFS and Ceph RBD, replica 2); the
// ratios against the floors and issue 13's goals (exit 1 when one is missed), memory of the
// daemons, and the cost of a 1 TiB disk.
// Prints tables and writes bench/results/fio-<date>.json and bench/results/latest-fio.json.
//
//   node dist/bench/run.js                  the whole benchmark (~8 minutes with the peers, then ~4 for relocate)
//   node dist/bench/run.js --profile-agent[=WORKLOAD]  UKAI only: one workload (default randread;
//                                           seqwrite, seqread, randread, randwrite) with the agent under
//                                           the CPU profiler; prints where its CPU time goes
//   … --profile-agent=WORKLOAD --profile-nodes  the storage nodes under the profiler too (their
//                                           whole life: the fill, also 1 MiB writes, and the workload)
// Environment: BENCH_RUNTIME_SEC (10), BENCH_RAMP_SEC (2), BENCH_FILE_MIB (2048), BENCH_NUMJOBS (4),
// BENCH_TARGETS (local,passthrough,passthrough-tuned,ukai,ukai-nbd,qemu-nbd,gluster,ceph; gluster and
// ceph install their Debian packages first, bench/setup-peers.sh), BENCH_KEEP=1 keeps the temp dir (logs) afterwards,
// BENCH_METRICS=1 runs the UKAI daemons with --metrics-listen and scrapes them (bench/ukai-cluster.ts;
// compare with a run without for the metrics' cost),
// BENCH_SUITES (fio,checksums,tls,relocate,copy,snapshot,export,migration,memory): which suites to run, each after fio in
// its own process: `checksums` and `tls` bench/ab-cost.ts (the fio jobs with checksums, or TLS, on
// vs off, interleaved rounds, ~2 min a round, BENCH_AB_ROUNDS), `relocate` bench/relocate.ts (relocation under load over a WAN proxy, ~4 min),
// `copy` bench/copy-throughput.ts (relocation and repair throughput against the WAN paths' caps,
// TLS on and off, ~3-5 min),
// `snapshot` bench/snapshot.ts (commit time, first write after a snapshot; ~1-2 min), `export`
// bench/export.ts (incremental export size vs bytes changed; ~2-5 min) and `migration`
// bench/migration.ts (a guest live-migrated between sites while its data follows, ~5 min), `memory`
// bench/agent-memory.ts (the agent's peak RSS with 10 disks under fio at once, goal ≤ 256 MiB, ~2 min).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { isAlive } from '../src/dev/pids'
import { tailFile } from '../src/dev/log-file'
import { createDisk } from '../src/admin/disk-admin'
import { measureBigDisk } from './big-disk'
import { newestProfile, summarizeCpuProfile, type ProfileSummary } from './cpu-profile'
import { runFio, type FioResult } from './fio'
import { WORKLOADS, fillJob, timedJob, type BenchSettings } from './jobs'
import { startPassthrough } from './passthrough-fs'
import { peakRssBytes } from './proc-stats'
import {
  FLOORS, PEER_TARGETS, cpuTable, formatBytes, formatFio, latencyTable, parseTargets, ratioRows, resourceTable, resultTable,
  type TargetName, type TargetRun
} from './report'
import { GOALS, evaluateGoals, goalLines, peerRatioTable } from './goals'
import { Progress, runWorkloads, type TargetExtras } from './target-run'
import { nbdUnixUri, startQemuNbd, waitForSocket } from './peer-nbd'
import { startUkaiCluster, type UkaiCluster } from './ukai-cluster'
import { Cleanup } from './cleanup'
import { RESULTS_DIR, envNumber } from './bench-env'
import { repoRoot } from '../src/dev/processes'
import { benchGluster } from './peer-gluster'
import { benchCeph } from './peer-ceph'

const MIB = 1024 * 1024
const BENCH_DISK = 'bench'


function settingsFromEnv (): BenchSettings {
  return {
    fileSizeBytes: envNumber('BENCH_FILE_MIB', 2048) * MIB,
    numJobs: envNumber('BENCH_NUMJOBS', 4),
    runtimeSec: envNumber('BENCH_RUNTIME_SEC', 10),
    rampSec: envNumber('BENCH_RAMP_SEC', 2)
  }
}

async function benchLocal (dir: string, settings: BenchSettings, progress: Progress, run: TargetRun): Promise<void> {
  fs.mkdirSync(dir, { recursive: true })
  await runWorkloads('local', path.join(dir, 'testfile'), settings, {}, progress, run)
}

async function benchPassthrough (target: 'passthrough' | 'passthrough-tuned', dir: string, settings: BenchSettings, progress: Progress, run: TargetRun, cleanup: Cleanup, extras: TargetExtras): Promise<void> {
  const mount = await startPassthrough({ backingDir: path.join(dir, 'backing'), mountPoint: path.join(dir, 'mnt'), logFile: path.join(dir, 'passthrough.log'), tuned: target === 'passthrough-tuned' })
  cleanup.add(`stop the ${target} mount`, () => mount.stop())
  try {
    await runWorkloads(target, path.join(mount.mountPoint, 'testfile'), settings, { [target]: mount.pid }, progress, run)
    extras.memory[target] = peakRssBytes(mount.pid)
  } finally {
    await mount.stop()
  }
}

// ukai: fio on the disk's file on the FUSE mount; ukai-nbd: the same disk through the agent's NBD
// export (--nbd-dir: a socket per disk), with fio's nbd engine. Each on a fresh cluster.
// ukai-insecure: the FUSE file on a cluster run --insecure, to measure what TLS costs.
async function benchUkai (target: 'ukai' | 'ukai-insecure' | 'ukai-nbd', dir: string, settings: BenchSettings, progress: Progress, run: TargetRun, cleanup: Cleanup, extras: TargetExtras): Promise<void> {
  const nbd = target === 'ukai-nbd'
  const insecure = target === 'ukai-insecure'
  const nbdDir = path.join(dir, 'nbd')
  process.stdout.write(`            starting ZooKeeper, 2 storage nodes and a mount agent${nbd ? ' with --nbd-dir' : ''}${insecure ? ', all --insecure' : ''} …\n`)
  const cluster = await startUkaiCluster({ dir, agentArgs: nbd ? ['--nbd-dir', nbdDir] : [], ...(insecure ? { tls: false } : {}) })
  if (cluster.metricsAddresses.length > 0) process.stdout.write(`            metrics on (BENCH_METRICS=1), scraped: ${cluster.metricsAddresses.join(' ')}\n`)
  cleanup.add('stop the UKAI cluster', () => cluster.stop())
  try {
    await createDisk(cluster.meta, { name: BENCH_DISK, sizeBytes: settings.fileSizeBytes, replicas: 2 })
    const pids: Record<string, number> = { agent: cluster.agent.pid, zookeeper: cluster.zk.pid }
    for (const n of cluster.nodes) pids[`node ${n.id}`] = n.pid
    if (nbd) {
      const socket = path.join(nbdDir, `${BENCH_DISK}.sock`)
      await waitForSocket(socket, { pid: cluster.agent.pid, what: 'the mount agent\'s NBD export' })
      const uri = nbdUnixUri(BENCH_DISK, socket)
      await runWorkloads(target, uri, settings, pids, progress, run, { kind: 'nbd', uri })
    } else {
      await runWorkloads(target, path.join(cluster.mountPoint, BENCH_DISK), settings, pids, progress, run)
    }
    const suffix = nbd ? ' (ukai-nbd)' : insecure ? ' (ukai-insecure)' : ''
    extras.memory[`mount agent${suffix}`] = peakRssBytes(cluster.agent.pid)
    for (const n of cluster.nodes) extras.memory[`storage node ${n.id}${suffix}`] = peakRssBytes(n.pid)
    // A daemon that died mid-run invalidates the numbers after it: say so, with its last words.
    const daemons = [{ name: 'mount agent', pid: cluster.agent.pid, logFile: cluster.agent.logFile },
      ...cluster.nodes.map(n => ({ name: `storage node ${n.id}`, pid: n.pid, logFile: n.logFile }))]
    for (const d of daemons) {
      if (isAlive(d.pid)) continue
      const logTail = tailFile(d.logFile)
      extras.deaths.push({ name: d.name, pid: d.pid, logTail })
      process.stdout.write(`\nWARNING: ${d.name} (pid ${d.pid}) died during the run; last lines of its log:\n${logTail}\n`)
    }
    if (nbd || insecure) return
    progress.start('ukai', '1 TiB disk: create+open')
    try {
      extras.bigDisk = await measureBigDisk({ meta: cluster.meta, zkConnect: cluster.zk.connectString, mountPoint: cluster.mountPoint })
      progress.finish(`create ${extras.bigDisk.createInProcessMs.toFixed(1)} ms, open+read ${extras.bigDisk.openAndRead4KiBMs.toFixed(1)} ms, ZK ${extras.bigDisk.zkMetadataBytes} bytes`)
    } catch (err) {
      progress.finish(`FAILED: ${(err as Error).message.split('\n')[0]}`)
    }
  } finally {
    await cluster.stop()
  }
}

// qemu-nbd on a local raw file, through fio's nbd engine as ukai-nbd is.
async function benchQemuNbd (dir: string, settings: BenchSettings, progress: Progress, run: TargetRun, cleanup: Cleanup, extras: TargetExtras): Promise<void> {
  const server = await startQemuNbd({ dir, sizeBytes: settings.fileSizeBytes, connections: settings.numJobs + 2 })
  cleanup.add('stop qemu-nbd', () => server.stop())
  try {
    await runWorkloads('qemu-nbd', server.uri, settings, { 'qemu-nbd': server.pid }, progress, run, { kind: 'nbd', uri: server.uri })
    extras.memory['qemu-nbd'] = peakRssBytes(server.pid)
  } finally {
    await server.stop()
  }
}

// ---- --profile-agent ------------------------------------------------------------------------

async function profileAgent (workDir: string, settings: BenchSettings, cleanup: Cleanup, workloadId: string, nodesToo: boolean): Promise<void> {
  const progress = new Progress(2)
  const profileDir = path.join(workDir, 'cpu-profiles')
  const nodeProfileDir = path.join(workDir, 'node-cpu-profiles')
  const cluster: UkaiCluster = await startUkaiCluster({ dir: path.join(workDir, 'ukai'), nodeCpuProfileDir: nodesToo ? nodeProfileDir : undefined })
  cleanup.add('stop the UKAI cluster', () => cluster.stop())
  const filename = path.join(cluster.mountPoint, BENCH_DISK)
  const randread = WORKLOADS.find(w => w.id === workloadId)
  if (randread === undefined) throw new Error(`--profile-agent=${workloadId}: unknown workload (known: ${WORKLOADS.map(w => w.id).join(', ')})`)
  let fio: FioResult
  try {
    await createDisk(cluster.meta, { name: BENCH_DISK, sizeBytes: settings.fileSizeBytes, replicas: 2 })
    progress.start('ukai', 'fill')
    const fill = await runFio(fillJob(filename, settings))
    progress.finish(`${(fill.main.bytesPerSec / MIB).toFixed(0)} MiB/s`)
    // A fresh agent under the CPU profiler: the profile covers the one workload only (and start-up).
    await cluster.restartAgent({ cpuProfileDir: profileDir })
    progress.start('ukai', `${randread.label} (profiled)`)
    fio = await runFio(timedJob(randread, filename, settings))
    progress.finish(formatFio(fio, randread).replace('\n', ', '))
  } finally {
    await cluster.stop() // the agent writes its profile as it exits
  }
  const file = newestProfile(profileDir)
  if (file === null) throw new Error(`the agent wrote no .cpuprofile to ${profileDir}`)
  const summary = summarizeCpuProfile(file, 20)
  printProfile('mount agent', summary)
  const nodes: ProfileSummary[] = []
  if (nodesToo) {
    for (const f of fs.readdirSync(nodeProfileDir).filter(f => f.endsWith('.cpuprofile')).sort()) {
      const s = summarizeCpuProfile(path.join(nodeProfileDir, f), 20)
      printProfile(`storage node (pid ${path.basename(f, '.cpuprofile')})`, s)
      nodes.push({ ...s, file: f })
    }
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const out = path.join(RESULTS_DIR, `agent-cpu-profile-${stamp}.json`)
  fs.writeFileSync(out, JSON.stringify({ kind: 'ukai-agent-cpu-profile', workload: randread, settings, fio, profile: { ...summary, file: path.basename(file) }, ...nodesToo ? { nodeProfiles: nodes } : {} }, null, 2) + '\n')
  fs.copyFileSync(out, path.join(RESULTS_DIR, 'latest-agent-cpu-profile.json'))
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), out)}\n`)
}

function printProfile (who: string, s: ProfileSummary): void {
  process.stdout.write(`\n${who} CPU profile (${s.samples} samples, self time):\n`)
  process.stdout.write('  by package:\n')
  for (const e of s.byPackage) process.stdout.write(`    ${e.selfPercent.toFixed(1).padStart(5)}%  ${e.name}\n`)
  process.stdout.write('  by function:\n')
  for (const e of s.topFunctions) process.stdout.write(`    ${e.selfPercent.toFixed(1).padStart(5)}%  ${e.name}\n`)
}

// ---- main -----------------------------------------------------------------------------------

function machineInfo (): Record<string, unknown> {
  let fioVersion = 'unknown'
  try { fioVersion = execFileSync('fio', ['--version'], { encoding: 'utf8' }).trim() } catch {}
  return { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryBytes: os.totalmem(), kernel: os.release(), node: process.version, fio: fioVersion }
}

async function main (): Promise<void> {
  const settings = settingsFromEnv()
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-fio-bench-'))
  const cleanup = new Cleanup()
  if (process.env.BENCH_KEEP === '1') process.stdout.write(`keeping ${workDir} (BENCH_KEEP=1)\n`)
  else cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: cleaning up …\n`)
      cleanup.run().finally(() => process.exit(130))
    })
  }
  try {
    const profileArg = process.argv.find(a => a === '--profile-agent' || a.startsWith('--profile-agent='))
    if (profileArg !== undefined) return await profileAgent(workDir, settings, cleanup, profileArg.split('=')[1] ?? 'randread', process.argv.includes('--profile-nodes'))
    const suites = suitesFromEnv()
    if (suites.includes('fio')) await benchmark(workDir, settings, cleanup)
    if (suites.includes('checksums')) await runSuiteProcess(cleanup, 'checksums on vs off, interleaved rounds (bench/ab-cost.ts)', 'ab-cost.js', ['checksums'])
    if (suites.includes('tls')) await runSuiteProcess(cleanup, 'mutual TLS on vs --insecure, interleaved rounds (bench/ab-cost.ts)', 'ab-cost.js', ['tls'])
    if (suites.includes('relocate')) await runSuiteProcess(cleanup, 'relocation under load (bench/relocate.ts)', 'relocate.js')
    if (suites.includes('copy')) await runSuiteProcess(cleanup, 'relocation and repair throughput over the WAN, TLS on and off (bench/copy-throughput.ts)', 'copy-throughput.js')
    if (suites.includes('snapshot')) await runSuiteProcess(cleanup, 'snapshot commit time and first write after a snapshot (bench/snapshot.ts)', 'snapshot.js')
    if (suites.includes('export')) await runSuiteProcess(cleanup, 'incremental export size vs bytes changed (bench/export.ts)', 'export.js')
    if (suites.includes('migration')) await runSuiteProcess(cleanup, 'live migration between sites (bench/migration.ts)', 'migration.js')
    if (suites.includes('memory')) await runSuiteProcess(cleanup, 'the mount agent\'s memory with 10 disks under load (bench/agent-memory.ts)', 'agent-memory.js')
  } finally {
    await cleanup.run()
  }
}

const SUITES = ['fio', 'checksums', 'tls', 'relocate', 'copy', 'snapshot', 'export', 'migration', 'memory']

function suitesFromEnv (): string[] {
  const v = process.env.BENCH_SUITES
  if (v === undefined || v === '') return SUITES
  const wanted = v.split(',').map(s => s.trim())
  for (const s of wanted) if (!SUITES.includes(s)) throw new Error(`BENCH_SUITES: unknown suite '${s}' (known: ${SUITES.join(', ')})`)
  return wanted
}

// A suite in its own process (each cleans up after itself, also on SIGINT/SIGTERM); a failure
// there is reported, not thrown, so the results before it stand.
async function runSuiteProcess (cleanup: Cleanup, title: string, script: string, args: string[] = []): Promise<void> {
  process.stdout.write(`\n---- ${title} ----\n`)
  const child: ChildProcess = spawn(process.execPath, [path.join(__dirname, script), ...args], { stdio: 'inherit' })
  cleanup.add(`stop ${script}`, () => { if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGTERM') })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  if (code !== 0) process.stdout.write(`${script} exited with ${code}\n`)
}

async function benchmark (workDir: string, settings: BenchSettings, cleanup: Cleanup): Promise<void> {
  const targets = parseTargets(process.env.BENCH_TARGETS)
  const peers = targets.filter(t => PEER_TARGETS.includes(t))
  if (peers.length > 0) installPeers(peers)
  const startedAt = new Date()
  process.stdout.write(`fio psync, numjobs=${settings.numJobs}, direct=1, ${settings.runtimeSec} s + ${settings.rampSec} s ramp per job, ` +
    `${formatBytes(settings.fileSizeBytes)} file; targets: ${targets.join(', ')}; work dir ${workDir}\n`)
  const progress = new Progress(targets.length * (WORKLOADS.length + 1) + (targets.includes('ukai') ? 1 : 0))
  const runs: TargetRun[] = []
  const extras: TargetExtras = { memory: {}, bigDisk: null, deaths: [] }
  const benchTarget = async (target: TargetName, dir: string, run: TargetRun): Promise<void> => {
    switch (target) {
      case 'local': return await benchLocal(dir, settings, progress, run)
      case 'passthrough': case 'passthrough-tuned': return await benchPassthrough(target, dir, settings, progress, run, cleanup, extras)
      case 'ukai': case 'ukai-insecure': case 'ukai-nbd': return await benchUkai(target, dir, settings, progress, run, cleanup, extras)
      case 'qemu-nbd': return await benchQemuNbd(dir, settings, progress, run, cleanup, extras)
      case 'gluster': return await benchGluster(dir, settings, progress, run, cleanup, extras)
      case 'ceph': return await benchCeph(dir, settings, progress, run, cleanup, extras)
    }
  }
  for (const target of targets) {
    const run: TargetRun = { target, fill: null, workloads: {}, error: null }
    runs.push(run)
    const dir = path.join(workDir, target)
    try {
      await benchTarget(target, dir, run)
    } catch (err) {
      run.error = (err as Error).message
      process.stdout.write(`\n${target}: FAILED: ${run.error}\n`)
    }
    // The test files are as large as the disk: do not let them pile up in the temp dir.
    fs.rmSync(dir, { recursive: true, force: true })
  }

  const rows = ratioRows(runs)
  process.stdout.write('\n' + resultTable(runs, rows) + '\n')
  process.stdout.write(latencyTable(runs) + '\n')
  // CPU of the serving processes (fio's own CPU, librbd's and libnbd's included, is not counted).
  for (const r of runs) if (!['local', 'passthrough'].includes(r.target) && r.error === null) process.stdout.write(cpuTable(r) + '\n')
  process.stdout.write(resourceTable(extras.memory, extras.bigDisk) + '\n')
  for (const r of rows) {
    if (r.floor === null) continue
    process.stdout.write(`floor ${r.workload.padEnd(9)} ukai/passthrough ${r.ukaiVsPassthrough?.toFixed(2) ?? '-'} ≥ ${r.floor}: ${r.verdict}` +
      ` (ukai/passthrough-tuned ${r.ukaiVsTunedPassthrough?.toFixed(2) ?? '-'})\n`)
  }
  const peerTable = peerRatioTable(runs)
  if (peerTable !== '') process.stdout.write(peerTable + '\n')
  const goals = evaluateGoals(runs)
  process.stdout.write(goalLines(goals) + '\n')
  // Honest reporting (issue 13): a floor below its bar or a goal missed is a failed bench.
  const missed = [...rows.filter(r => r.verdict === 'BELOW').map(r => `floor ${r.workload}`), ...goals.filter(g => g.verdict === 'MISS').map(g => `goal ${g.id}`)]
  const measured = rows.filter(r => r.verdict !== 'n/a').length + goals.filter(g => g.verdict !== 'n/a').length
  process.stdout.write(`${measured - missed.length} of ${measured} measured floors and goals met${missed.length > 0 ? `; missed: ${missed.join(', ')}` : ''}\n`)
  if (missed.length > 0) process.exitCode = 1

  const result = {
    kind: 'ukai-fio-bench',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: machineInfo(),
    settings: { ...settings, ioengine: 'psync', direct: 1, ioengineByTarget: { 'ukai-nbd': 'nbd', 'qemu-nbd': 'nbd', ceph: 'rbd' }, peers: { replicas: 2, glusterShardBytes: 4 * MIB, glusterProfile: 'virt', cephOsds: 2, cephFailureDomain: 'osd' }, groupReporting: true, ukaiDisk: { replicas: 2, storageNodes: 2, sites: 1 }, ukaiMetrics: process.env.BENCH_METRICS === '1' },
    floors: FLOORS,
    ratios: rows,
    goals: GOALS,
    goalResults: goals,
    targets: runs,
    peakRssBytes: extras.memory,
    bigDisk: extras.bigDisk,
    daemonsThatDied: extras.deaths
  }
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-')
  const out = path.join(RESULTS_DIR, `fio-${stamp}.json`)
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  fs.copyFileSync(out, path.join(RESULTS_DIR, 'latest-fio.json'))
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), out)} and bench/results/latest-fio.json\n`)
}

// The peers' Debian packages, only for the peers selected (never in the test path).
function installPeers (peers: TargetName[]): void {
  process.stdout.write(`checking the Debian packages for ${peers.join(', ')} (bench/setup-peers.sh) …\n`)
  execFileSync('bash', [path.join(repoRoot(), 'bench', 'setup-peers.sh'), ...peers], { stdio: 'inherit' })
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})

