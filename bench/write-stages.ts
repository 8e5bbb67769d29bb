// Where the time of one replicated 4 KiB write goes, stage by stage (issue 13 part 3): the fio
// suite's NBD random-write job (fio's nbd engine, BENCH_JOBS=4 jobs at iodepth 1) against a private
// cluster (ZooKeeper, two storage-node processes, the mount agent with --nbd-dir, a 2-replica
// disk, mutual TLS as in `npm run bench`), with every daemon recording stage timestamps
// (src/lib/write-trace.ts, UKAI_WRITE_TRACE_DIR). Each NBD write is followed through the agent's
// NBD session, disk engine and node clients, each node's Io stream and store, and back; the
// report gives each stage's mean, p50, p90 and p99 in µs, the node side for the replica that
// answered last (the one the write waited for), and what fio saw around it. Also per process:
// CPU µs and run-queue wait µs (/proc/PID/task/*/schedstat: ready to run, no core free) per write.
// Build with tsc, run `node dist/bench/write-stages.js` (BENCH_FILE_MIB=256, BENCH_RUNTIME_SEC=5,
// BENCH_RAMP_SEC=1, BENCH_JOBS=4; BENCH_TRACE_KEEP=1 keeps the temp dir and its trace files).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createDisk } from '../src/admin/disk-admin'
import { envNumber } from './bench-env'
import { runFio, type FioResult } from './fio'
import { fillJob, timedJob, WORKLOADS } from './jobs'
import { nbdUnixUri, waitForSocket } from './peer-nbd'
import { cpuSeconds } from './proc-stats'
import { startUkaiCluster } from './ukai-cluster'

const MIB = 1024 * 1024
const DISK = 'bench'

interface Ev { t: number, a: number, b: number, c: number }
type Stages = Map<string, Ev[]>

// Nanoseconds the process's threads have waited on a run queue so far (schedstat's 2nd field).
function runQueueWaitNs (pid: number): number {
  let sum = 0
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    try { sum += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[1]) } catch {}
  }
  return sum
}

function loadTraces (dir: string): { stages: Stages, nodes: string[] } {
  const stages: Stages = new Map()
  for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.json'))) {
    const head = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { stages: string[], fields: number, count: number }
    const raw = fs.readFileSync(path.join(dir, f.replace(/\.json$/, '.f64')))
    const ev = new Float64Array(raw.buffer, raw.byteOffset, head.count * head.fields)
    for (let i = 0; i < ev.length; i += head.fields) {
      const name = head.stages[ev[i]]
      let list = stages.get(name)
      if (list === undefined) { list = []; stages.set(name, list) }
      list.push({ t: ev[i + 1], a: ev[i + 2], b: ev[i + 3], c: ev[i + 4] })
    }
  }
  for (const list of stages.values()) list.sort((x, y) => x.t - y.t)
  const nodes = [...stages.keys()].filter(s => s.startsWith('node.rx ')).map(s => s.slice('node.rx '.length)).sort()
  return { stages, nodes }
}

// Per stage, its events by key, in time order.
class Index {
  private readonly by = new Map<string, Map<string, Ev[]>>()
  constructor (private readonly stages: Stages) {}
  private of (stage: string, key: (e: Ev) => string): Map<string, Ev[]> {
    let m = this.by.get(stage)
    if (m === undefined) {
      m = new Map()
      for (const e of this.stages.get(stage) ?? []) {
        const k = key(e)
        const l = m.get(k)
        if (l === undefined) m.set(k, [e]); else l.push(e)
      }
      this.by.set(stage, m)
    }
    return m
  }

  // The first event of `stage` for (a, b) at or after tMin.
  next (stage: string, a: number, b: number, tMin: number): Ev | undefined {
    return this.of(stage, e => `${e.a}:${e.b}`).get(`${a}:${b}`)?.find(e => e.t >= tMin)
  }

  // The event of `stage` for request id c (ids are unique per node client and per node).
  byId (stage: string, c: number, tMin: number): Ev | undefined {
    return this.of(stage, e => String(e.c)).get(String(c))?.find(e => e.t >= tMin)
  }
}

interface WriteStages { [segment: string]: number }

// The stages of each NBD write issued in [t0, t1], as µs between consecutive points.
// `lost`: where the writes not followed to the end were lost (a stage without its event).
function followWrites (stages: Stages, nodes: string[], blockBytes: number, t0: number, t1: number, lostAt: Map<string, number>): WriteStages[] {
  const ix = new Index(stages)
  const out: WriteStages[] = []
  const lost = (stage: string): void => { lostAt.set(stage, (lostAt.get(stage) ?? 0) + 1) }
  for (const req of stages.get('nbd.req') ?? []) {
    if (req.t < t0 || req.t > t1) continue
    const block = Math.floor(req.a / blockBytes)
    const off = req.a % blockBytes
    const lease = ix.next('disk.lease', req.a, 0, req.t)
    const locked = lease && ix.next('disk.locked', block, off, lease.t)
    if (locked === undefined) { lost('disk.lease/locked'); continue }
    const perNode: Array<Record<string, Ev | undefined>> = []
    for (const n of nodes) {
      const queued = ix.next(`client.queue ${n}`, block, off, locked.t)
      if (queued === undefined) break
      const id = queued.c
      const sent = ix.byId(`client.sent ${n}`, id, queued.t)
      const wrote = ix.byId(`client.wrote ${n}`, id, queued.t)
      const nodeRx = ix.byId(`node.rx ${n}`, id, queued.t)
      const written = nodeRx && ix.byId(`node.written ${n}`, id, nodeRx.t)
      const tx = written && ix.byId(`node.tx ${n}`, id, written.t)
      const txDone = tx && ix.byId(`node.txdone ${n}`, id, tx.t)
      const rx = ix.byId(`client.rx ${n}`, id, queued.t)
      const done = rx && ix.byId(`client.done ${n}`, id, rx.t)
      perNode.push({ queued, sent, wrote, nodeRx, written, tx, txDone, rx, done })
    }
    if (perNode.length !== nodes.length) { lost('client.queue'); continue }
    const missing = perNode.flatMap(p => Object.entries(p).filter(([, e]) => e === undefined).map(([k]) => k))
    if (missing.length > 0) { lost(missing.join('+')); continue }
    const last = perNode.reduce((x, y) => ((y.done as Ev).t > (x.done as Ev).t ? y : x))
    const first = perNode.reduce((x, y) => ((y.queued as Ev).t < (x.queued as Ev).t ? y : x))
    const lastDone = (last.done as Ev).t
    const acked = ix.next('disk.acked', block, off, lastDone)
    const done = acked && ix.next('disk.done', req.a, 0, acked.t)
    const reply = done && ix.next('nbd.reply', req.a, 0, done.t)
    if (reply === undefined) { lost('disk.acked/done/nbd.reply'); continue }
    const T = (e: Ev | undefined): number => (e as Ev).t
    out.push({
      'NBD request read → lease held (throttle, lease, snapshot gate)': T(lease) - req.t,
      'lease held → range order + block lock taken': T(locked) - T(lease),
      'block lock → first replica request queued': T(first.queued) - T(locked),
      'queued → sent (setImmediate: the batch turn)': T(last.sent) - T(last.queued),
      'sent → node read it (grpc-js, HTTP/2, TLS, loopback TCP, node wakes)': T(last.nodeRx) - T(last.sent),
      '  of which: agent, until grpc-js wrote it to the HTTP/2 stream': T(last.wrote) - T(last.sent),
      'node: read → store.write done (gate, fence, range lock, pwrite+sums)': T(last.written) - T(last.nodeRx),
      'node: written → reply handed to grpc-js (setImmediate: the reply batch)': T(last.tx) - T(last.written),
      'node handed reply → agent read it (TLS, TCP, agent wakes)': T(last.rx) - T(last.tx),
      '  of which: node, until grpc-js wrote it to the HTTP/2 stream': T(last.txDone) - T(last.tx),
      'agent read reply → client.write resolved': T(last.done) - T(last.rx),
      'last replica resolved → disk engine has both (allSettled, dirty note)': T(acked) - lastDone,
      'both acked → disk.write resolved (locks released)': T(done) - T(acked),
      'disk.write resolved → NBD reply written': reply.t - T(done),
      'total in the agent (NBD request read → reply written)': reply.t - req.t,
      'other replica finished earlier by': lastDone - Math.min(...perNode.map(p => (p.done as Ev).t))
    })
  }
  return out
}

function pct (sorted: number[], p: number): number { return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] }

async function main (): Promise<void> {
  const fileMib = envNumber('BENCH_FILE_MIB', 256)
  const settings = { fileSizeBytes: fileMib * MIB, numJobs: envNumber('BENCH_JOBS', 4), runtimeSec: envNumber('BENCH_RUNTIME_SEC', 5), rampSec: envNumber('BENCH_RAMP_SEC', 1) }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-wstages-'))
  const traceDir = path.join(dir, 'trace')
  fs.mkdirSync(traceDir)
  // The daemons inherit it (src/dev/processes.ts); this process writes nothing.
  process.env.UKAI_WRITE_TRACE_DIR = traceDir
  const nbdDir = path.join(dir, 'nbd')
  const load0 = os.loadavg()[0]
  const cluster = await startUkaiCluster({ dir, agentArgs: ['--nbd-dir', nbdDir] })
  let window = { t0: 0, t1: 0 }
  const pids: Record<string, number> = { agent: cluster.agent.pid }
  for (const n of cluster.nodes) pids[`node ${n.id}`] = n.pid
  const cpu: Record<string, number> = {}
  const wait: Record<string, number> = {}
  let fio: FioResult | undefined
  let blockBytes = 0
  try {
    blockBytes = (await createDisk(cluster.meta, { name: DISK, sizeBytes: settings.fileSizeBytes, replicas: 2 })).blockSizeBytes
    const socket = path.join(nbdDir, `${DISK}.sock`)
    await waitForSocket(socket, { pid: cluster.agent.pid, what: 'the mount agent\'s NBD export' })
    const engine = { kind: 'nbd' as const, uri: nbdUnixUri(DISK, socket) }
    await runFio(fillJob(DISK, settings, engine))
    const job = timedJob(WORKLOADS.find(w => w.id === 'randwrite') ?? WORKLOADS[3], DISK, settings, engine)
    for (const [k, pid] of Object.entries(pids)) { cpu[k] = cpuSeconds(pid) ?? NaN; wait[k] = runQueueWaitNs(pid) }
    const t0 = Number(process.hrtime.bigint()) / 1000 + settings.rampSec * 1e6
    fio = await runFio(job)
    window = { t0, t1: Number(process.hrtime.bigint()) / 1000 }
    for (const [k, pid] of Object.entries(pids)) { cpu[k] = (cpuSeconds(pid) ?? NaN) - cpu[k]; wait[k] = runQueueWaitNs(pid) - wait[k] }
  } finally {
    await cluster.stop()
  }
  if (fio === undefined) throw new Error('fio did not run')
  const { stages, nodes } = loadTraces(traceDir)
  const lostAt = new Map<string, number>()
  const writes = followWrites(stages, nodes, blockBytes, window.t0, window.t1, lostAt)
  // CPU and waits were counted over the ramp too.
  const totalWrites = fio.main.iops * (settings.runtimeSec + settings.rampSec)
  console.log(`load average ${load0.toFixed(2)} → ${os.loadavg()[0].toFixed(2)}; ${settings.numJobs} jobs at iodepth 1, ${fileMib} MiB, ${settings.runtimeSec} s + ${settings.rampSec} s ramp`)
  const issued = (stages.get('nbd.req') ?? []).filter(e => e.t >= window.t0 && e.t <= window.t1).length
  console.log(`fio: ${Math.round(fio.main.iops)} IOPS, mean ${fio.main.meanLatencyUsec.toFixed(0)} µs, p99 ${fio.main.p99LatencyUsec.toFixed(0)} µs; ${writes.length} of ${issued} writes followed through every stage`)
  if (lostAt.size > 0) console.log(`not followed, by the stage that had no event: ${[...lostAt].map(([k, n]) => `${k} ${n}`).join(', ')}`)
  if (writes.length === 0) throw new Error('no write followed through every stage: were the daemons built with the trace points?')
  const rows: string[][] = [['stage (µs)', 'mean', 'p50', 'p90', 'p99', 'share of mean']]
  const totalKey = 'total in the agent (NBD request read → reply written)'
  const meanOf = (k: string): number => writes.reduce((s, w) => s + w[k], 0) / writes.length
  const totalMean = meanOf(totalKey)
  for (const k of Object.keys(writes[0])) {
    const v = writes.map(w => w[k]).sort((x, y) => x - y)
    const m = meanOf(k)
    const share = k === totalKey || k.startsWith('other') || k.startsWith('  of which') ? '' : `${(m / fio.main.meanLatencyUsec * 100).toFixed(0)} %`
    rows.push([k, m.toFixed(0), pct(v, 0.5).toFixed(0), pct(v, 0.9).toFixed(0), pct(v, 0.99).toFixed(0), share])
  }
  rows.push(['outside the agent (fio mean − agent total: libnbd, socket, fio)', (fio.main.meanLatencyUsec - totalMean).toFixed(0), '', '', '', `${((fio.main.meanLatencyUsec - totalMean) / fio.main.meanLatencyUsec * 100).toFixed(0)} %`])
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)))
  for (const r of rows) console.log(r.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join('  '))
  for (const k of Object.keys(pids)) {
    console.log(`${k.padEnd(8)} CPU ${(cpu[k] * 1e6 / totalWrites).toFixed(0)} µs per write, run-queue wait ${(wait[k] / 1000 / totalWrites).toFixed(0)} µs per write (${(wait[k] / 1e9).toFixed(2)} s in all)`)
  }
  if (process.env.BENCH_TRACE_KEEP === '1') console.log(`trace files kept in ${traceDir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
}

main().catch(err => { console.error(err); process.exit(1) })
