// Throughput of one well-behaved StorageClient (window 32) against storage-node builds side by
// side, to see what the Io memory budget (src/storagenode/io-budget.ts) costs. Each build's
// dist/bench/storage-stream.js is forked as the server (its `--server` mode); builds take turns
// case by case for ROUNDS rounds, so that load from other processes on the machine hits them
// alike; the table shows medians. Also samples every server's peak RSS. Build with tsc, then e.g.
//   BENCH_SERVERS=before=/tmp/old/dist/bench/storage-stream.js,after=dist/bench/storage-stream.js \
//     node dist/bench/stream-budget.js
// Prints a table (MiB/s per build, the ratio of the last build to the first) and writes
// bench/results/stream-budget.json.
import { ChildProcess, fork } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { StorageClient } from '../src/storagenode/client'
import { streamLoad } from './stream-load'

const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 1500)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const WINDOW = 32
const RSS_SAMPLE_MS = 50
const KiB = 1024
const ALL_CASES: Array<{ op: 'write' | 'read', ioBytes: number }> = [
  { op: 'write', ioBytes: 4 * KiB }, { op: 'read', ioBytes: 4 * KiB },
  { op: 'write', ioBytes: 128 * KiB }, { op: 'read', ioBytes: 128 * KiB },
  { op: 'write', ioBytes: 1024 * KiB }, { op: 'read', ioBytes: 1024 * KiB },
  { op: 'write', ioBytes: 4096 * KiB }, { op: 'read', ioBytes: 4096 * KiB }
]
// BENCH_CASES=write:4096,read:128 (KiB) runs only those.
const ONLY = process.env.BENCH_CASES?.split(',')
const CASES = ALL_CASES.filter(k => ONLY === undefined || ONLY.includes(`${k.op}:${k.ioBytes / KiB}`))

function servers (): Array<{ name: string, script: string }> {
  const spec = process.env.BENCH_SERVERS ?? `this=${path.join(__dirname, 'storage-stream.js')}`
  return spec.split(',').map(s => {
    const [name, script] = s.split('=')
    return { name, script: path.resolve(script) }
  })
}

function rssBytes (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? 0 : Number(m[1]) * 1024
}

// MiB/s, and the server's CPU per operation (µs): closer to the truth on a loaded machine.
async function runCase (server: Server, client: StorageClient, op: 'write' | 'read', ioBytes: number): Promise<{ mibPerSec: number, serverCpuUsPerOp: number }> {
  const cpuBefore = await server.cpuUs()
  const started = process.hrtime.bigint()
  const ops = await streamLoad(client, op, ioBytes, WINDOW, DURATION_MS)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  return { mibPerSec: ops * ioBytes / seconds / 2 ** 20, serverCpuUsPerOp: (await server.cpuUs() - cpuBefore) / ops }
}

interface Server { address: string, pid: number, cpuUs: () => Promise<number>, stop: () => Promise<void> }

async function startServer (script: string): Promise<Server> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-bench-budget-'))
  const child: ChildProcess = fork(script, ['--server', dataDir], { stdio: 'inherit' })
  const exited = new Promise(resolve => child.once('exit', resolve))
  const stop = async (): Promise<void> => {
    if (child.exitCode === null) child.send('stop')
    await exited
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
  try {
    const address = await new Promise<string>((resolve, reject) => {
      child.once('message', (m: { address: string }) => resolve(m.address))
      child.once('exit', code => reject(new Error(`server ${script} exited with ${code}`)))
    })
    const cpuUs = async (): Promise<number> => await new Promise(resolve => {
      child.once('message', (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu.user + m.cpu.system))
      child.send('cpu')
    })
    return { address, pid: child.pid as number, cpuUs, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

async function main (): Promise<void> {
  const builds = servers()
  // All servers run at once and take turns case by case, round by round: load from other
  // processes on the machine then hits every build alike.
  const running: Server[] = []
  const mibPerSec = builds.map(() => CASES.map(() => [] as number[]))
  const cpuUsPerOp = builds.map(() => CASES.map(() => [] as number[]))
  const peakRss = builds.map(() => 0)
  try {
    for (const b of builds) running.push(await startServer(b.script))
    const sampler = setInterval(() => running.forEach((r, b) => { peakRss[b] = Math.max(peakRss[b], rssBytes(r.pid)) }), RSS_SAMPLE_MS)
    const clients = running.map(r => new StorageClient({ nodeId: 'bench-node', address: r.address, windowSize: WINDOW }))
    try {
      for (let c = 0; c < CASES.length; c++) {
        for (let round = 0; round < ROUNDS; round++) {
          // Alternate who goes first, so neither always runs right after the other's burst.
          const order = round % 2 === 0 ? builds.map((_, b) => b) : builds.map((_, b) => builds.length - 1 - b)
          for (const b of order) {
            const r = await runCase(running[b], clients[b], CASES[c].op, CASES[c].ioBytes)
            mibPerSec[b][c].push(r.mibPerSec)
            cpuUsPerOp[b][c].push(r.serverCpuUsPerOp)
          }
        }
      }
    } finally {
      clearInterval(sampler)
      await Promise.all(clients.map(async cl => { await cl.close() }))
    }
  } finally {
    for (const r of running) await r.stop()
  }
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
  console.log(`window ${WINDOW}, ${DURATION_MS} ms per case, ${ROUNDS} rounds, load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs; medians of rounds`)
  const ratioOf = (xs: number[]): string => builds.length > 1 ? (xs[xs.length - 1] / xs[0]).toFixed(2).padStart(7) : ''
  console.log(['MiB/s'.padEnd(14), ...builds.map(b => b.name.padStart(9)), builds.length > 1 ? 'ratio'.padStart(7) : '', '  server µs/op', ...builds.map(b => b.name.padStart(9)), builds.length > 1 ? 'ratio'.padStart(7) : ''].join(' '))
  const rows = CASES.map((k, c) => {
    const mib = builds.map((_, b) => median(mibPerSec[b][c]))
    const cpu = builds.map((_, b) => median(cpuUsPerOp[b][c]))
    console.log([`${k.op} ${k.ioBytes / KiB} KiB`.padEnd(14), ...mib.map(m => m.toFixed(1).padStart(9)), ratioOf(mib), ''.padEnd(14), ...cpu.map(m => m.toFixed(0).padStart(9)), ratioOf(cpu)].join(' '))
    return { ...k, mibPerSec: Object.fromEntries(builds.map((bb, b) => [bb.name, mibPerSec[b][c]])), serverCpuUsPerOp: Object.fromEntries(builds.map((bb, b) => [bb.name, cpuUsPerOp[b][c]])) }
  })
  console.log(['peak RSS MiB'.padEnd(14), ...peakRss.map(r => (r / 2 ** 20).toFixed(0).padStart(9))].join(' '))
  const outDir = path.join(__dirname, '..', '..', 'bench', 'results')
  fs.mkdirSync(outDir, { recursive: true })
  const out = { benchmark: 'stream-budget', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadAverage1m: os.loadavg()[0], durationMs: DURATION_MS, rounds: ROUNDS, window: WINDOW, builds: builds.map(b => b.name), rows, peakRssBytes: Object.fromEntries(builds.map((bb, b) => [bb.name, peakRss[b]])) }
  fs.writeFileSync(path.join(outDir, 'stream-budget.json'), JSON.stringify(out, null, 2) + '\n')
}

main().catch(err => { console.error(err); process.exit(1) })
