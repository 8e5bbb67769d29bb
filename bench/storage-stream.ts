// Micro benchmark of the storage node data path: one StorageClient, one Io stream, a window of
// requests in flight, against a storage node in a child process (so client and server each get
// an event loop, as in production). Build with tsc, run `node dist/bench/storage-stream.js`.
// Prints a table and writes bench/results/storage-stream.json ($BENCH_RESULTS_DIR if set).
import { fork } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { StorageClient } from '../src/storagenode/client'
import { startStorageServer } from '../src/storagenode/server'
import { streamLoad } from './stream-load'
import { RESULTS_DIR } from './bench-env'

const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 3000)
// Requests in flight (4: what fio's four psync jobs put on one node) and sizes, e.g.
// BENCH_WINDOWS=1,4,16 BENCH_IO_BYTES=4096.
const WINDOWS = (process.env.BENCH_WINDOWS ?? '16,32').split(',').map(Number)
const IO_BYTES = (process.env.BENCH_IO_BYTES ?? '131072,4096').split(',').map(Number)

interface Result {
  op: 'write' | 'read', ioBytes: number, window: number, ops: number, seconds: number, opsPerSec: number, mibPerSec: number
  clientCpuUsPerOp: number, serverCpuUsPerOp: number   // CPU cost, meaningful even on a loaded machine
}

type CpuProbe = () => Promise<NodeJS.CpuUsage>
const cpuTotalUs = (c: NodeJS.CpuUsage): number => c.user + c.system

async function serverMain (): Promise<void> {
  const dataDir = process.argv[3]
  const server = await startStorageServer({ nodeId: 'bench-node', dataDir, listen: '127.0.0.1:0' })
  process.send?.({ address: server.address })
  process.on('message', (m: string) => {
    if (m === 'cpu') { process.send?.({ cpu: process.cpuUsage() }); return }
    server.close(1000).then(() => process.exit(0), () => process.exit(1))
  })
}

async function run (client: StorageClient, serverCpu: CpuProbe, op: 'write' | 'read', ioBytes: number, window: number): Promise<Result> {
  const serverCpuBefore = await serverCpu()
  const clientCpuBefore = process.cpuUsage()
  const started = process.hrtime.bigint()
  const ops = await streamLoad(client, op, ioBytes, window, DURATION_MS)
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const clientCpuUs = cpuTotalUs(process.cpuUsage(clientCpuBefore))
  const serverCpuUs = cpuTotalUs(await serverCpu()) - cpuTotalUs(serverCpuBefore)
  return {
    op, ioBytes, window, ops, seconds, opsPerSec: ops / seconds, mibPerSec: ops * ioBytes / seconds / 2 ** 20,
    clientCpuUsPerOp: clientCpuUs / ops, serverCpuUsPerOp: serverCpuUs / ops
  }
}

async function main (): Promise<void> {
  if (process.argv[2] === '--server') return await serverMain()
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-bench-'))
  if (os.loadavg()[0] > os.cpus().length) {
    console.log(`warning: load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs; throughput is not representative, CPU per op is closer`)
  }
  let child
  if (process.env.BENCH_IN_PROCESS === '1') {
    child = undefined
  } else {
    child = fork(__filename, ['--server', dataDir], { stdio: 'inherit', execArgv: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(a => a !== '') })
  }
  const address = child === undefined
    ? (await startStorageServer({ nodeId: 'bench-node', dataDir, listen: '127.0.0.1:0' })).address
    : await new Promise<string>(resolve => child.once('message', (m: { address: string }) => resolve(m.address)))
  // In-process mode cannot separate the two; both columns then show the process total.
  const serverCpu: CpuProbe = child === undefined
    ? async () => process.cpuUsage()
    : async () => await new Promise(resolve => {
      child.once('message', (m: { cpu: NodeJS.CpuUsage }) => resolve(m.cpu))
      child.send('cpu')
    })
  const results: Result[] = []
  try {
    for (const window of WINDOWS) {
      const client = new StorageClient({ nodeId: 'bench-node', address, windowSize: window })
      for (const ioBytes of IO_BYTES) {
        for (const op of ['write', 'read'] as const) {
          const r = await run(client, serverCpu, op, ioBytes, window)
          results.push(r)
          console.log(`${op.padEnd(5)} ${String(ioBytes / 1024).padStart(4)} KiB  window ${String(window).padStart(2)}  ${r.opsPerSec.toFixed(0).padStart(7)} ops/s  ${r.mibPerSec.toFixed(1).padStart(7)} MiB/s  cpu/op client ${r.clientCpuUsPerOp.toFixed(0).padStart(4)} µs server ${r.serverCpuUsPerOp.toFixed(0).padStart(4)} µs`)
        }
      }
      await client.close()
    }
  } finally {
    child?.send('stop')
    if (child !== undefined) await new Promise(resolve => child.once('exit', resolve))
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
  const outDir = RESULTS_DIR
  fs.mkdirSync(outDir, { recursive: true })
  const out = { benchmark: 'storage-stream', date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadAverage1m: os.loadavg()[0], durationMs: DURATION_MS, results }
  fs.writeFileSync(path.join(outDir, 'storage-stream.json'), JSON.stringify(out, null, 2) + '\n')
  if (child === undefined) process.exit(0)
}

main().catch(err => { console.error(err); process.exit(1) })
