// Relocation under load: what `ukai relocate` does to a running VM's I/O, and how fast it copies
// over a WAN link.
//
//   node dist/bench/relocate.js        (~4-5 minutes; also part of `npm run bench`, see run.ts)
//
// Setup (all private, under one temp dir): ZooKeeper; storage nodes a1,a2 (site-a) and b1,b2
// (site-b); in-process WAN proxies (WAN_ONE_WAY_DELAY_MS each way, WAN_CAP_MBIT_PER_SEC each
// direction) on every cross-site link that carries data: hv-b → a1, hv-b → a2 (the agent's
// --node-address) and b1 → a1, b1 → a2, b2 → a1, b2 → a2 (the nodes' --peer-address, PullBlock).
// ZooKeeper is reached directly by everyone (only the data path is "far").
//
// 1. A 1 GiB disk (4 MiB blocks, 2 replicas) placed at site-a is filled through agent hv-a at
//    site-a (1 MiB sequential writes: fast, no WAN), then hv-a stops: the "VM" now runs on hv-b.
// 2. Three phases, each with the same load from hv-b's mount: fio 4 KiB random reads
//    (READ_JOBS jobs, whole disk) and, at the same time, one 4 KiB random-write job over the
//    first WRITE_REGION_BYTES of the same disk (a hot region: every write outside it would add a
//    new block version the copy has to move too, inflating the copy):
//      before  disk at site-a, idle (no relocation)
//      during  `ukai relocate DISK --to site-b --wait`, started 1 s into fio; fio is stopped
//              (SIGINT: fio still prints its report) the moment the relocation is done
//      after   disk at site-b
//    The writes go to the far replicas (a1,a2) and, while relocating, to the syncing near ones
//    too, and wait on the per-block copy lock; hv-b holds the lease, so the relocation executes
//    on hv-b's agent (the CLI only waits).
// 3. The issue's floors, printed PASS/BELOW (a report, not an exit status):
//      mean read latency after / before ≤ 0.1
//      relocation throughput (bytes copied / duration) ≥ 0.8 of the caps of the paths it used (issue 13)
//      p99 write latency during relocation ≤ 3 × idle (the "before" phase)
//    "The link" is the inter-site link: WAN_CAP_MBIT_PER_SEC, the proxy's cap. The proxies cap
//    each TCP connection on its own (startWanProxy has no shared bucket), so the four node-to-node
//    paths could together carry 4× that; the report also gives throughput over the sum of the caps
//    of the paths the copy used (≥ 5 % of the copied bytes). Utilisation of each path, CPU of the
//    processes, the bench's event-loop delay (it runs the proxies) and a PullBlock-chunk probe
//    (1 MiB reads one at a time through a fresh proxy) say what limited the copy.
// Results: bench/results/relocate-<date>.json and bench/results/latest-relocate.json.
// Mutual TLS on every channel by default (RELOC_TLS=0: --insecure; bench/copy-throughput.ts
// measures copies with TLS on and off side by side).
// Environment: RELOC_PHASE_SEC (12), RELOC_READ_JOBS (2), RELOC_TLS (1), BENCH_KEEP=1 keeps the temp dir.
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { MetaStore } from '../src/meta/store'
import { planRelocation } from '../src/relocate/plan'
import { startZooKeeper, type ZooKeeperHandle } from '../src/dev/zookeeper'
import { cliMainPath, daemonEnv, startMountAgent, startStorageNode, type MountAgentProcess, type StorageNodeProcess } from '../src/dev/processes'
import { startWanProxy, type WanProxy } from '../src/dev/wan-proxy'
import { unmount } from '../src/lib/mounts'
import { createDisk } from '../src/admin/disk-admin'
import { StorageClient } from '../src/storagenode/client'
import { PULL_CHUNK_BYTES, PULL_WINDOW_CHUNKS } from '../src/storagenode/block-pull'
import { COPY_CONCURRENCY_DEFAULT } from '../src/relocate/executor'
import { fioArgs, parseFioJson, runFio, type FioJob } from './fio'
import { CpuMeter } from './proc-stats'
import { Cleanup } from './cleanup'
import { RESULTS_DIR, envNumber } from './bench-env'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { makeDevTls } from '../src/dev/dev-tls'
import { openTlsDir, setClientTls } from '../src/storagenode/tls'
import { WAN_CAP_MBIT_PER_SEC, WAN_ONE_WAY_DELAY_MS } from './wan-settings'

const KIB = 1024
const MIB = 1024 * KIB
const GIB = 1024 * MIB

const WAN_CAP_BYTES_PER_SEC = WAN_CAP_MBIT_PER_SEC * 1e6 / 8

const DISK = 'reloc'
const DISK_SIZE_BYTES = 1 * GIB
const BLOCK_SIZE_BYTES = 4 * MIB
const REPLICAS = 2
const SITE_A = 'site-a'
const SITE_B = 'site-b'
const WRITE_REGION_BYTES = 128 * MIB
const RAMP_SEC = 2
const RELOCATION_TIMEOUT_MS = 240_000
const USED_PATH_MIN_SHARE = 0.05

const FLOOR_READ_AFTER_OVER_BEFORE_MAX = 0.1
const FLOOR_THROUGHPUT_OVER_USED_CAPS_MIN = 0.8
const FLOOR_WRITE_P99_DURING_OVER_IDLE_MAX = 3



const PHASE_SEC = envNumber('RELOC_PHASE_SEC', 12)
const TLS_ON = process.env.RELOC_TLS !== '0'
const READ_JOBS = envNumber('RELOC_READ_JOBS', 2)

// ---- progress and cleanup -------------------------------------------------------------------

const t0 = Date.now()
function say (text: string): void {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${text}\n`)
}


// ---- fio that can be stopped early ----------------------------------------------------------

interface Latency { ios: number, iops: number, meanUsec: number, p50Usec: number, p99Usec: number, p999Usec: number, maxUsec: number }
interface FioRun { job: string, args: string[], runtimeMs: number, read: Latency, write: Latency }

interface FioJsonDir { iops: number, total_ios: number, clat_ns?: { mean: number, max: number, percentile?: Record<string, number> } }

function latency (d: FioJsonDir): Latency {
  const pct = d.clat_ns?.percentile ?? {}
  return {
    ios: d.total_ios,
    iops: Math.round(d.iops),
    meanUsec: Math.round((d.clat_ns?.mean ?? 0) / 1000),
    p50Usec: Math.round((pct['50.000000'] ?? 0) / 1000),
    p99Usec: Math.round((pct['99.000000'] ?? 0) / 1000),
    p999Usec: Math.round((pct['99.900000'] ?? 0) / 1000),
    maxUsec: Math.round((d.clat_ns?.max ?? 0) / 1000)
  }
}

// Starts fio; stop() sends SIGINT (fio ends its jobs and still prints the JSON report).
function startFio (job: FioJob, children: Set<ChildProcess>): { done: Promise<FioRun>, stop: () => void } {
  const args = fioArgs(job)
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => { out += d.toString('utf8') })
  child.stderr!.on('data', (d: Buffer) => { err += d.toString('utf8') })
  const timer = setTimeout(() => child.kill('SIGKILL'), job.timeoutMs)
  const done = new Promise<FioRun>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      children.delete(child)
      try {
        const j = parseFioJson(out).jobs[0] as unknown as { error: number, job_runtime: number, read: FioJsonDir, write: FioJsonDir }
        if (j === undefined || j.error !== 0) throw new Error(`job error ${j?.error}`)
        resolve({ job: job.name, args, runtimeMs: j.job_runtime, read: latency(j.read), write: latency(j.write) })
      } catch (e) {
        reject(new Error(`fio ${job.name} (exit ${code}): ${(e as Error).message}: ${err.trim().slice(0, 300)}`))
      }
    })
  })
  return { done, stop: () => { if (child.exitCode === null) child.kill('SIGINT') } }
}

function readJob (filename: string, runtimeSec: number, rampSec: number): FioJob {
  return { name: 'randread-4k', pattern: 'randread', blockSizeBytes: 4 * KIB, filename, fileSizeBytes: DISK_SIZE_BYTES, numJobs: READ_JOBS, splitFileAmongJobs: false, runtimeSec, rampSec, timeoutMs: (runtimeSec + rampSec + 60) * 1000 }
}
function writeJob (filename: string, runtimeSec: number, rampSec: number): FioJob {
  return { name: 'randwrite-4k', pattern: 'randwrite', blockSizeBytes: 4 * KIB, filename, fileSizeBytes: WRITE_REGION_BYTES, numJobs: 1, splitFileAmongJobs: false, runtimeSec, rampSec, timeoutMs: (runtimeSec + rampSec + 60) * 1000 }
}

interface Phase { name: string, read: FioRun, write: FioRun }

function phaseLine (p: Phase): string {
  return `${p.name}: read mean ${(p.read.read.meanUsec / 1000).toFixed(2)} ms p99 ${(p.read.read.p99Usec / 1000).toFixed(2)} ms (${p.read.read.iops} IOPS); ` +
    `write mean ${(p.write.write.meanUsec / 1000).toFixed(2)} ms p99 ${(p.write.write.p99Usec / 1000).toFixed(2)} ms (${p.write.write.iops} IOPS)`
}

// ---- main -----------------------------------------------------------------------------------

interface ProxyInfo { name: string, from: string, to: string, proxy: WanProxy }

async function main (): Promise<void> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-reloc-bench-'))
  const cleanup = new Cleanup()
  const children = new Set<ChildProcess>()
  if (process.env.BENCH_KEEP === '1') say(`keeping ${workDir} (BENCH_KEEP=1)`)
  else cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  // Children we spawned ourselves (fio, the relocate CLI) are stopped by PID first.
  cleanup.add('stop fio / CLI children', () => { for (const c of children) if (c.exitCode === null) c.kill('SIGTERM') })
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: cleaning up …\n`)
      cleanup.run().finally(() => process.exit(130))
    })
  }
  try {
    await benchmark(workDir, cleanup, children)
  } finally {
    await cleanup.run()
  }
}

async function benchmark (workDir: string, cleanup: Cleanup, children: Set<ChildProcess>): Promise<void> {
  const startedAt = new Date()
  say(`relocation benchmark: WAN ${WAN_ONE_WAY_DELAY_MS} ms one-way, ${WAN_CAP_MBIT_PER_SEC} Mbit/s per proxied connection and direction; ` +
    `${DISK_SIZE_BYTES / GIB} GiB disk, ${BLOCK_SIZE_BYTES / MIB} MiB blocks, ${REPLICAS} replicas; work dir ${workDir}`)
  processZkAuth() // before any daemon starts: they and the CLI inherit $UKAI_ZK_AUTH
  const zk: ZooKeeperHandle = await startZooKeeper({ dir: path.join(workDir, 'zk'), extraConfig: { forceSync: 'no' } })
  cleanup.add('stop ZooKeeper', () => zk.stop({ termTimeoutMs: 5_000 }))
  const meta = await MetaStore.connect(zk.connectString, { auth: processZkAuth() })
  cleanup.add('close the ZooKeeper session', () => meta.close())
  say(`ZooKeeper on ${zk.connectString}`)

  // Mutual TLS on every channel, as `ukai dev up` runs it (RELOC_TLS=0: --insecure everywhere).
  const tls = TLS_ON ? await makeDevTls(workDir, { nodes: ['a1', 'a2', 'b1', 'b2'], agents: ['hv-a', 'hv-b'] }) : undefined
  setClientTls(tls === undefined ? { kind: 'insecure' } : { kind: 'tls', files: openTlsDir(tls.adminDir) })
  const nodes: Record<string, StorageNodeProcess> = {}
  const startNode = async (id: string, site: string, extraArgs: string[] = []): Promise<void> => {
    const n = await startStorageNode({ dir: path.join(workDir, `node-${id}`), id, site, zk: zk.connectString, capacity: '20GiB', tlsDir: tls?.nodeDir(id), extraArgs })
    nodes[id] = n
    cleanup.add(`stop node ${id} (pid ${n.pid})`, () => n.stop({ termTimeoutMs: 5_000 }).then(() => {}))
  }
  await startNode('a1', SITE_A)
  await startNode('a2', SITE_A)

  const proxies: ProxyInfo[] = []
  const addProxy = async (from: string, to: string): Promise<string> => {
    const proxy = await startWanProxy({ target: nodes[to].address, delayMs: WAN_ONE_WAY_DELAY_MS, mbps: WAN_CAP_MBIT_PER_SEC })
    proxies.push({ name: `${from}→${to}`, from, to, proxy })
    cleanup.add(`close WAN proxy ${from}→${to}`, () => proxy.close())
    return proxy.address
  }
  for (const b of ['b1', 'b2']) {
    const peerArgs = ['--peer-address', `a1=${await addProxy(b, 'a1')}`, '--peer-address', `a2=${await addProxy(b, 'a2')}`]
    await startNode(b, SITE_B, peerArgs)
  }
  const agentArgs = ['--node-address', `a1=${await addProxy('hv-b', 'a1')}`, '--node-address', `a2=${await addProxy('hv-b', 'a2')}`]
  say(`storage nodes a1,a2 (${SITE_A}), b1,b2 (${SITE_B}); ${proxies.length} WAN proxies`)

  const mountA = path.join(workDir, 'mnt-a')
  const mountB = path.join(workDir, 'mnt-b')
  const startAgent = async (host: string, site: string, mountPoint: string, extraArgs: string[]): Promise<MountAgentProcess> => {
    const a = await startMountAgent({ dir: path.join(workDir, `agent-${host}`), mountPoint, host, site, zk: zk.connectString, tlsDir: tls?.agentDir(host), extraArgs })
    cleanup.add(`stop agent ${host} (pid ${a.pid}) and unmount`, async () => { await a.stop({ termTimeoutMs: 10_000 }); await unmount(mountPoint) })
    return a
  }
  const hvA = await startAgent('hv-a', SITE_A, mountA, [])
  const hvB = await startAgent('hv-b', SITE_B, mountB, agentArgs)
  say(`agents hv-a (${SITE_A}, ${mountA}) and hv-b (${SITE_B}, ${mountB}, to a1/a2 through the proxies)`)

  await createDisk(meta, { name: DISK, sizeBytes: DISK_SIZE_BYTES, blockSizeBytes: BLOCK_SIZE_BYTES, replicas: REPLICAS, site: SITE_A })
  say(`disk ${DISK} created at ${SITE_A}; filling it through hv-a (1 MiB sequential writes, site-local) …`)
  const fill = await runFio({ name: 'fill-1m', pattern: 'write', blockSizeBytes: MIB, filename: path.join(mountA, DISK), fileSizeBytes: DISK_SIZE_BYTES, numJobs: 2, splitFileAmongJobs: true, timeoutMs: 300_000 })
  say(`filled ${DISK_SIZE_BYTES / MIB} MiB at ${(fill.main.bytesPerSec / MIB).toFixed(0)} MiB/s; stopping hv-a (the VM now runs on hv-b)`)
  await hvA.stop({ termTimeoutMs: 10_000 })
  await unmount(mountA)

  const fileB = path.join(mountB, DISK)
  const runPhase = async (name: string): Promise<Phase> => {
    say(`${name}: fio ${READ_JOBS}× 4 KiB randread + 1× 4 KiB randwrite (first ${WRITE_REGION_BYTES / MIB} MiB), ${PHASE_SEC} s + ${RAMP_SEC} s ramp …`)
    const r = startFio(readJob(fileB, PHASE_SEC, RAMP_SEC), children)
    const w = startFio(writeJob(fileB, PHASE_SEC, RAMP_SEC), children)
    const p = { name, read: await r.done, write: await w.done }
    say(phaseLine(p))
    return p
  }

  const before = await runPhase('before')

  // The plan's estimate (a short node-to-node probe over the same proxies), to set against the
  // duration measured below.
  const { estimate } = await planRelocation(meta, { disk: DISK, site: SITE_B })
  say(`plan estimate: ${estimate.seconds === null ? 'none' : `${estimate.seconds.toFixed(1)} s`} (${estimate.basis}, ${(estimate.measuredBytesPerSec / MIB).toFixed(1)} MiB/s over ${estimate.sampledBlocks} sampled blocks)`)

  // ---- during --------------------------------------------------------------------------------
  say(`during: fio as above, time-based until the relocation ends; ukai relocate ${DISK} --to ${SITE_B} 1 s in …`)
  const r = startFio(readJob(fileB, RELOCATION_TIMEOUT_MS / 1000, 0), children)
  const w = startFio(writeJob(fileB, RELOCATION_TIMEOUT_MS / 1000, 0), children)
  await sleep(1000)
  const proxyBytes0 = new Map(proxies.map(p => [p.name, p.proxy.stats().bytesDown + p.proxy.stats().bytesUp]))
  const pids: Record<string, number> = { 'agent hv-b': hvB.pid, 'bench (proxies)': process.pid }
  for (const [id, n] of Object.entries(nodes)) pids[`node ${id}`] = n.pid
  const cpu = new CpuMeter(pids)
  cpu.begin()
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  const cliLog = path.join(workDir, 'relocate-cli.log')
  const cliFd = fs.openSync(cliLog, 'a')
  const cli = spawn(process.execPath, [cliMainPath(), 'relocate', DISK, '--to', SITE_B, '--wait', '--zk', zk.connectString, ...(tls === undefined ? ['--insecure'] : [])], { stdio: ['ignore', cliFd, cliFd], env: { ...daemonEnv(), ...(tls === undefined ? {} : { UKAI_TLS_DIR: tls.adminDir }) } })
  fs.closeSync(cliFd)
  children.add(cli)
  const cliExit = new Promise<number | null>((resolve) => cli.on('close', (code) => { children.delete(cli); resolve(code) }))
  const relocStartMs = Date.now()
  let rec: Awaited<ReturnType<MetaStore['getRelocation']>> = null
  let lastLineMs = 0
  const rates: Array<{ tSec: number, bytes: number }> = []
  for (;;) {
    await sleep(250)
    rec = await meta.getRelocation(DISK)
    if (rec !== null && (rec.state === 'done' || rec.state === 'paused' || rec.state === 'cancelled')) break
    if (Date.now() - relocStartMs > RELOCATION_TIMEOUT_MS) throw new Error(`relocation not done after ${RELOCATION_TIMEOUT_MS / 1000} s (state ${rec?.state ?? 'none'}); CLI log ${cliLog}`)
    if (Date.now() - lastLineMs >= 5000 && rec !== null) {
      lastLineMs = Date.now()
      const tSec = (Date.now() - relocStartMs) / 1000
      rates.push({ tSec, bytes: rec.progress.bytes })
      const pct = rec.plan.bytes > 0 ? (100 * rec.progress.bytes / rec.plan.bytes).toFixed(0) : '-'
      say(`  relocation ${rec.state} on ${rec.executor || '?'}: ${(rec.progress.bytes / MIB).toFixed(0)} / ${(rec.plan.bytes / MIB).toFixed(0)} MiB (${pct} %), ` +
        `${(rec.progress.bytes / MIB / Math.max(tSec, 0.001)).toFixed(1)} MiB/s so far`)
    }
  }
  const relocWallMs = Date.now() - relocStartMs
  r.stop()
  w.stop()
  const cpuDuring = cpu.end()
  loopDelay.disable()
  const proxyDuring = proxies.map(p => {
    const s = p.proxy.stats()
    const bytes = s.bytesDown + s.bytesUp - (proxyBytes0.get(p.name) ?? 0)
    return { path: p.name, bytes, mbitPerSec: Math.round(bytes * 8 / 1e6 / (relocWallMs / 1000)), utilisation: Number((bytes / (relocWallMs / 1000) / WAN_CAP_BYTES_PER_SEC).toFixed(3)) }
  })
  const during: Phase = { name: 'during', read: await r.done, write: await w.done }
  const cliCode = await Promise.race([cliExit, sleep(15_000).then(() => 'still running')])
  if (rec === null || rec.state !== 'done') throw new Error(`relocation ended ${rec?.state ?? '?'}: ${rec?.reason ?? ''} (CLI log ${cliLog})`)
  const durationMs = rec.finishedAtMs > 0 ? rec.finishedAtMs - rec.createdAtMs : relocWallMs
  const copiedBytes = rec.progress.bytes
  say(`relocation done in ${(durationMs / 1000).toFixed(1)} s: ${(copiedBytes / MIB).toFixed(0)} MiB copied (plan ${(rec.plan.bytes / MIB).toFixed(0)} MiB, ` +
    `${rec.plan.writtenBlocks} written blocks × ${rec.targetNodes.length} targets), CLI exit ${String(cliCode)}; ` +
    `estimated ${estimate.seconds?.toFixed(1) ?? '-'} s (actual/estimate ${estimate.seconds !== null ? (durationMs / 1000 / estimate.seconds).toFixed(2) : '-'})`)
  say(phaseLine(during))

  // Let hv-b see the flip (ZooKeeper watch) before measuring "after".
  await sleep(1000)
  const after = await runPhase('after')

  // ---- what limited the copy -----------------------------------------------------------------
  const throughputBytesPerSec = copiedBytes / (durationMs / 1000)
  const copyPaths = proxyDuring.filter(p => p.path.startsWith('b') && p.bytes >= USED_PATH_MIN_SHARE * copiedBytes)
  const linkBytesPerSec = WAN_CAP_BYTES_PER_SEC
  const usedPathsBytesPerSec = Math.max(1, copyPaths.length) * WAN_CAP_BYTES_PER_SEC
  say(`probe: PullBlock-sized reads (1 MiB), ${PULL_WINDOW_CHUNKS} in flight, through a fresh proxy (same delay and cap), as a pull does …`)
  const probe = await probeChunkReads(nodes.b1.address, meta)
  say(`probe: ${probe.chunks} chunks, ${probe.meanMs.toFixed(1)} ms each (ideal ${probe.idealMs.toFixed(1)} ms = RTT ${2 * WAN_ONE_WAY_DELAY_MS} + ${PULL_CHUNK_BYTES / MIB} MiB at the cap) → ${(probe.bytesPerSec * 8 / 1e6).toFixed(0)} Mbit/s per pull stream`)
  // The executor copies COPY_CONCURRENCY_DEFAULT blocks at a time, each to its targets one after
  // another: at most that many pulls in flight, spread over the copy paths.
  const concurrencyBoundBytesPerSec = COPY_CONCURRENCY_DEFAULT * probe.bytesPerSec

  const ratios = {
    readMeanAfterOverBefore: after.read.read.meanUsec / before.read.read.meanUsec,
    readP99AfterOverBefore: after.read.read.p99Usec / before.read.read.p99Usec,
    readMeanDuringOverBefore: during.read.read.meanUsec / before.read.read.meanUsec,
    throughputOverLink: throughputBytesPerSec / linkBytesPerSec,
    throughputOverUsedPathCaps: throughputBytesPerSec / usedPathsBytesPerSec,
    throughputOverConcurrencyBound: throughputBytesPerSec / concurrencyBoundBytesPerSec,
    writeP99DuringOverIdle: during.write.write.p99Usec / before.write.write.p99Usec
  }
  const floors = [
    { floor: `mean read latency after/before ≤ ${FLOOR_READ_AFTER_OVER_BEFORE_MAX}`, value: ratios.readMeanAfterOverBefore, pass: ratios.readMeanAfterOverBefore <= FLOOR_READ_AFTER_OVER_BEFORE_MAX },
    { floor: `relocation throughput / used paths' caps ≥ ${FLOOR_THROUGHPUT_OVER_USED_CAPS_MIN}`, value: ratios.throughputOverUsedPathCaps, pass: ratios.throughputOverUsedPathCaps >= FLOOR_THROUGHPUT_OVER_USED_CAPS_MIN },
    { floor: `p99 write latency during/idle ≤ ${FLOOR_WRITE_P99_DURING_OVER_IDLE_MAX}`, value: ratios.writeP99DuringOverIdle, pass: ratios.writeP99DuringOverIdle <= FLOOR_WRITE_P99_DURING_OVER_IDLE_MAX }
  ]

  const maxPathUtilisation = Math.max(...proxyDuring.map(p => p.utilisation))
  const limitedBy = maxPathUtilisation >= 0.85
    ? `the proxy cap (a path at ${(maxPathUtilisation * 100).toFixed(0)} % of ${WAN_CAP_MBIT_PER_SEC} Mbit/s)`
    : ratios.throughputOverConcurrencyBound >= 0.5
      ? `the executor's concurrency × PullBlock's per-stream rate: ${COPY_CONCURRENCY_DEFAULT} blocks in flight (each to its targets at once), each pull reads ` +
        `${PULL_CHUNK_BYTES / MIB} MiB chunks ${PULL_WINDOW_CHUNKS} at a time (plus a BlockInfo round trip per block); no path above ${(maxPathUtilisation * 100).toFixed(0)} % of its cap`
      : `neither the proxy cap (max path ${(maxPathUtilisation * 100).toFixed(0)} %) nor the concurrency bound (${(ratios.throughputOverConcurrencyBound * 100).toFixed(0)} % of it): CPU / scheduling (see CPU and event-loop delay)`

  // ---- report --------------------------------------------------------------------------------
  const ms = (usec: number): string => (usec / 1000).toFixed(2).padStart(8)
  const lines = [
    '',
    `hv-b (${SITE_B}) I/O on ${DISK}, fio psync direct=1 4 KiB; clat in ms`,
    'phase    │ read mean   p99      IOPS │ write mean  p99      IOPS',
    ...[before, during, after].map(p => `${p.name.padEnd(8)} │ ${ms(p.read.read.meanUsec)} ${ms(p.read.read.p99Usec)} ${String(p.read.read.iops).padStart(6)} │ ${ms(p.write.write.meanUsec)} ${ms(p.write.write.p99Usec)} ${String(p.write.write.iops).padStart(6)}`),
    '',
    `relocation: ${(copiedBytes / MIB).toFixed(0)} MiB in ${(durationMs / 1000).toFixed(1)} s = ${(throughputBytesPerSec * 8 / 1e6).toFixed(0)} Mbit/s; ` +
      `link ${WAN_CAP_MBIT_PER_SEC} Mbit/s (${(ratios.throughputOverLink * 100).toFixed(0)} %); the ${copyPaths.length} path(s) it used, capped separately, ` +
      `${(usedPathsBytesPerSec * 8 / 1e6).toFixed(0)} Mbit/s together (${(ratios.throughputOverUsedPathCaps * 100).toFixed(0)} %)`,
    `copy limited by: ${limitedBy}`,
    'proxy path   traffic during the relocation (both directions), utilisation of its cap',
    ...proxyDuring.map(p => `  ${p.path.padEnd(10)} ${(p.bytes / MIB).toFixed(0).padStart(6)} MiB ${String(p.mbitPerSec).padStart(5)} Mbit/s ${(p.utilisation * 100).toFixed(0).padStart(4)} %`),
    `CPU during the relocation (% of one core): ${Object.entries(cpuDuring).map(([k, v]) => `${k} ${v ?? '-'}`).join(', ')}`,
    `bench event loop (runs the proxies) delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms, max ${(loopDelay.max / 1e6).toFixed(1)} ms`,
    `PullBlock chunk probe: ${probe.meanMs.toFixed(1)} ms per ${PULL_CHUNK_BYTES / MIB} MiB read (ideal ${probe.idealMs.toFixed(1)}) → ${(probe.bytesPerSec * 8 / 1e6).toFixed(0)} Mbit/s per pull; ` +
      `× ${COPY_CONCURRENCY_DEFAULT} pulls in flight = ${(concurrencyBoundBytesPerSec * 8 / 1e6).toFixed(0)} Mbit/s concurrency bound`,
    '',
    'ratios:',
    ...Object.entries(ratios).map(([k, v]) => `  ${k.padEnd(31)} ${v.toFixed(3)}`),
    `machine load average ${os.loadavg().map(l => l.toFixed(1)).join(' ')} on ${os.cpus().length} CPUs`,
    '',
    ...floors.map(f => `floor ${f.floor.padEnd(44)} ${f.value.toFixed(3).padStart(7)}: ${f.pass ? 'PASS' : 'BELOW'}`)
  ]
  process.stdout.write(lines.join('\n') + '\n')

  const result = {
    kind: 'ukai-relocate-bench',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, kernel: os.release(), node: process.version },
    settings: {
      wan: { oneWayDelayMs: WAN_ONE_WAY_DELAY_MS, capMbitPerSecPerConnectionAndDirection: WAN_CAP_MBIT_PER_SEC, proxiedPaths: proxies.map(p => p.name) },
      disk: { sizeBytes: DISK_SIZE_BYTES, blockSizeBytes: BLOCK_SIZE_BYTES, replicas: REPLICAS, placedAt: SITE_A, filledThrough: 'hv-a (site-a), 1 MiB sequential, 2 jobs' },
      fio: { ioengine: 'psync', direct: 1, bs: '4k', readJobs: READ_JOBS, readRegionBytes: DISK_SIZE_BYTES, writeJobs: 1, writeRegionBytes: WRITE_REGION_BYTES, phaseSec: PHASE_SEC, rampSec: RAMP_SEC, concurrentReadAndWrite: true, from: 'hv-b (site-b)' },
      copyConcurrency: COPY_CONCURRENCY_DEFAULT,
      pullChunkBytes: PULL_CHUNK_BYTES
    },
    fill: { bytesPerSec: fill.main.bytesPerSec, wallMs: fill.wallMs },
    phases: { before, during, after },
    relocation: {
      durationMs, wallMsSeenByBench: relocWallMs, planEstimate: estimate, copiedBytes, plan: rec.plan, targets: rec.targetNodes, dropped: rec.dropNodes,
      throughputBytesPerSec, throughputMbitPerSec: throughputBytesPerSec * 8 / 1e6, linkMbitPerSec: linkBytesPerSec * 8 / 1e6, usedPathsCapMbitPerSec: usedPathsBytesPerSec * 8 / 1e6,
      copyPaths: copyPaths.map(p => p.path), progressSamples: rates
    },
    bottleneck: {
      proxyTrafficDuringRelocation: proxyDuring,
      cpuPercentDuringRelocation: cpuDuring,
      benchEventLoopDelayMs: { p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
      pullChunkProbe: probe,
      concurrencyBoundMbitPerSec: concurrencyBoundBytesPerSec * 8 / 1e6,
      limitedBy,
      loadAverage: os.loadavg()
    },
    ratios,
    floors
  }
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const out = path.join(RESULTS_DIR, `relocate-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n')
  fs.copyFileSync(out, path.join(RESULTS_DIR, 'latest-relocate.json'))
  say(`wrote ${path.relative(process.cwd(), out)} and bench/results/latest-relocate.json`)
}

// What one PullBlock stream can do: the same sequential 1 MiB reads, through a fresh proxy with
// the link's delay and cap, from the bench. It runs after the relocation, when the data sits on
// b1,b2 (a1's copy is dropped), so it reads b1 through the proxy: any node does for timing.
async function probeChunkReads (address: string, meta: MetaStore): Promise<{ chunks: number, meanMs: number, idealMs: number, bytesPerSec: number }> {
  const disk = await meta.getDisk(DISK)
  const proxy = await startWanProxy({ target: address, delayMs: WAN_ONE_WAY_DELAY_MS, mbps: WAN_CAP_MBIT_PER_SEC })
  const client = new StorageClient({ nodeId: 'b1', address: proxy.address })
  try {
    const versions = await client.blockInfo({ diskUuid: disk.uuid, block: 100 })
    const v = versions[versions.length - 1]
    if (v === undefined) throw new Error('probe: block 100 has no version on b1')
    await client.read({ diskUuid: disk.uuid, block: 100, epoch: v.epoch, offset: 0, length: 4 * KIB }) // connect
    const chunks = 12
    let next = 0
    const started = performance.now()
    // PULL_WINDOW_CHUNKS reads in flight, as a pull keeps them.
    await Promise.all(Array.from({ length: PULL_WINDOW_CHUNKS }, async () => {
      while (next < chunks) {
        const i = next++
        const off = (i % Math.max(1, Math.floor(v.sizeBytes / PULL_CHUNK_BYTES))) * PULL_CHUNK_BYTES
        await client.read({ diskUuid: disk.uuid, block: 100, epoch: v.epoch, offset: off, length: PULL_CHUNK_BYTES })
      }
    }))
    const meanMs = (performance.now() - started) / chunks
    // With the pipe full, a chunk costs its time on the link; the first one also a round trip.
    const idealMs = PULL_CHUNK_BYTES / WAN_CAP_BYTES_PER_SEC * 1000 + 2 * WAN_ONE_WAY_DELAY_MS / chunks
    return { chunks, meanMs, idealMs, bytesPerSec: PULL_CHUNK_BYTES / (meanMs / 1000) }
  } finally {
    await client.close()
    await proxy.close()
  }
}

main().catch((err) => {
  process.stderr.write(`relocate bench failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
