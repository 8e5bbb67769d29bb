// Latency of the storage data path layer by layer, serial (1 in flight) and with 4 in flight
// (what fio psync ×4 produces), for 4 KiB and 128 KiB reads and writes:
//   echo   StorageClient → a grpc-js Io server in a child process that answers at once (no store)
//   store  StorageClient → startStorageServer in a child process (BlockStore on a temp dir)
//   store2 two such nodes, writes sent to both at once (a 2-replica disk), reads from the first
// Build with tsc, run `node dist/bench/latency-layers.js [echo,store,store2]`.
import { fork } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { StorageClient } from '../src/storagenode/client'
import { startStorageServer, tuneServerSessions } from '../src/storagenode/server'
import { IoRequestIn, IoResponse, MAX_MESSAGE_BYTES, StorageHandlers, storageService } from '../src/storagenode/wire'
import { holdGcBallast } from '../src/lib/gc-ballast'
import { streamLoad } from './stream-load'

const ONLY = process.env.BENCH_ONLY  // e.g. 'write:131072:4'
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 1500)
const EMPTY = Buffer.alloc(0)

async function echoServer (): Promise<string> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_MESSAGE_BYTES })
  const payloads = new Map<number, Buffer>()
  const unimpl = (_c: unknown, cb: (e: Error) => void): void => cb(new Error('unimplemented'))
  const handlers: StorageHandlers = {
    Io: (call: grpc.ServerDuplexStream<IoRequestIn, IoResponse>) => {
      call.on('data', (req: IoRequestIn) => {
        let data: Buffer = EMPTY
        if (req.op === 'read') {
          const n = req.read?.length ?? 0
          data = payloads.get(n) ?? Buffer.alloc(n, 1)
          payloads.set(n, data)
        }
        call.write({ id: req.id, code: '', message: '', data })
      })
      call.on('end', () => call.end())
    },
    Fence: unimpl,
    BlockInfo: unimpl,
    ListBlocks: unimpl,
    DeleteDisk: unimpl,
    DeleteBlocks: unimpl,
    Stat: unimpl
  } as unknown as StorageHandlers
  server.addService(storageService().service, handlers)
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => e !== null ? reject(e) : resolve(p)))
  if (process.env.BENCH_NO_TUNE !== '1') tuneServerSessions(server)
  return `127.0.0.1:${port}`
}

async function serverMain (): Promise<void> {
  const kind = process.argv[3]
  const dataDir = process.argv[4]
  fs.mkdirSync(dataDir, { recursive: true })
  const address = kind === 'echo' ? await echoServer() : (await startStorageServer({ nodeId: 'bench-node', dataDir, listen: '127.0.0.1:0' })).address
  process.send?.({ address })
  process.on('message', (m) => {
    if (m === 'cpu') process.send?.({ cpu: process.cpuUsage() })
    else process.exit(0)
  })
}

interface Row { cpuUsPerOp: number, layer: string, op: string, kib: number, inFlight: number, opsPerSec: number, meanUs: number, p50Us: number, p99Us: number, mibPerSec: number }

type Client = Pick<StorageClient, 'read' | 'write' | 'close'>

// Writes go to every client at once (all must succeed), reads to the first.
function replicated (clients: StorageClient[]): Client {
  if (clients.length === 1) return clients[0]
  return {
    read: async (a) => await clients[0].read(a),
    write: async (a) => { await Promise.all(clients.map(async c => await c.write(a))); return '' },
    close: async () => { await Promise.all(clients.map(async c => { await c.close() })) }
  }
}

async function measure (layer: string, client: Client, op: 'read' | 'write', ioBytes: number, inFlight: number): Promise<Row> {
  const lat: number[] = []
  const cpu0 = process.cpuUsage()
  const started = process.hrtime.bigint()
  await streamLoad(client, op, ioBytes, inFlight, DURATION_MS, us => lat.push(us))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const cpu = process.cpuUsage(cpu0)
  lat.sort((a, b) => a - b)
  const ops = lat.length
  return {
    cpuUsPerOp: (cpu.user + cpu.system) / lat.length,
    layer, op, kib: ioBytes / 1024, inFlight, opsPerSec: ops / seconds,
    meanUs: lat.reduce((a, b) => a + b, 0) / ops, p50Us: lat[Math.floor(ops / 2)], p99Us: lat[Math.floor(ops * 0.99)],
    mibPerSec: ops * ioBytes / seconds / 2 ** 20
  }
}

export function formatRow (r: Row): string {
  return `${r.layer.padEnd(8)} ${r.op.padEnd(5)} ${String(r.kib).padStart(4)} KiB  x${r.inFlight}  ${r.opsPerSec.toFixed(0).padStart(6)} ops/s ${r.mibPerSec.toFixed(1).padStart(7)} MiB/s  mean ${r.meanUs.toFixed(0).padStart(6)} µs  p50 ${r.p50Us.toFixed(0).padStart(6)}  p99 ${r.p99Us.toFixed(0).padStart(6)}  client cpu/op ${r.cpuUsPerOp.toFixed(0).padStart(5)} µs`
}

async function main (): Promise<void> {
  if (process.argv[2] === '--server') return await serverMain()
  const layers = (process.argv[2] ?? 'echo,store').split(',')
  if (process.env.BENCH_NO_BALLAST !== '1') holdGcBallast()  // as the mount agent does (lib/gc-ballast.ts)
  console.log(`load average ${os.loadavg()[0].toFixed(2)}`)
  for (const layer of layers) {
    // 'store2': two storage nodes written in parallel and read from the first, as the agent does
    // for a 2-replica disk.
    const replicas = layer === 'store2' ? 2 : 1
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-lat-'))
    const children = Array.from({ length: replicas }, (_, i) => fork(__filename, ['--server', layer === 'echo' ? 'echo' : 'store', path.join(dataDir, String(i))], { stdio: 'inherit', execArgv: (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(a => a !== '') }))
    try {
      const addresses = await Promise.all(children.map(async child => await new Promise<string>(resolve => child.once('message', (m: { address: string }) => resolve(m.address)))))
      const client = replicated(addresses.map(address => new StorageClient({ nodeId: 'bench-node', address })))
      // Fill so reads hit written data.
      await measure(layer, client, 'write', 128 * 1024, 4)
      for (const ioBytes of [4096, 128 * 1024]) {
        for (const op of ['read', 'write'] as const) {
          for (const inFlight of [1, 4]) if (ONLY === undefined || ONLY === `${op}:${ioBytes}:${inFlight}`) console.log(formatRow(await measure(layer, client, op, ioBytes, inFlight)))
        }
      }
      await client.close()
    } finally {
      for (const child of children) {
        child.send('stop')
        await new Promise(resolve => child.once('exit', resolve))
      }
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

if (require.main === module) main().catch(err => { console.error(err); process.exit(1) })
