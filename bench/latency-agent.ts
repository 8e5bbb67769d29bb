// Latency of the two top layers of the data path, in one run against one private cluster
// (ZooKeeper, two storage-node processes, a 2-replica disk):
//   agent  an in-process Agent's VirtualDisk, called directly (no FUSE)
//   fuse   fio psync through the mount agent's FUSE mount (the production path)
// Serial (1 in flight) and 4 in flight, 4 KiB and 128 KiB. Build with tsc, run
// `node dist/bench/latency-agent.js`. Companion of latency-layers.ts (the gRPC layers below).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Agent } from '../src/agent/agent'
import { createDisk } from '../src/admin/disk-admin'
import { runFio } from './fio'
import { startUkaiCluster } from './ukai-cluster'
import { holdGcBallast } from '../src/lib/gc-ballast'

const MIB = 1024 * 1024
const DISK = 'lat'
const DISK_BYTES = 256 * MIB
const DURATION_MS = Number(process.env.BENCH_DURATION_MS ?? 2000)
const ONLY = process.env.BENCH_ONLY  // 'agent' or 'fuse'

interface Row { layer: string, op: string, kib: number, inFlight: number, opsPerSec: number, meanUs: number, p50Us: number, p99Us: number, mibPerSec: number }

function fmt (r: Row): string {
  return `${r.layer.padEnd(6)} ${r.op.padEnd(5)} ${String(r.kib).padStart(4)} KiB  x${r.inFlight}  ${r.opsPerSec.toFixed(0).padStart(6)} ops/s ${r.mibPerSec.toFixed(1).padStart(7)} MiB/s  mean ${r.meanUs.toFixed(0).padStart(6)} µs  p50 ${r.p50Us.toFixed(0).padStart(6)}  p99 ${r.p99Us.toFixed(0).padStart(6)}`
}

async function measureDisk (io: (op: 'read' | 'write', offset: number, data: Buffer) => Promise<void>, op: 'read' | 'write', ioBytes: number, inFlight: number): Promise<Row> {
  const data = Buffer.alloc(ioBytes, 0x5a)
  const slots = DISK_BYTES / ioBytes
  let next = 0
  const lat: number[] = []
  const started = process.hrtime.bigint()
  const deadline = Date.now() + DURATION_MS
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const offset = ((next++ * 7919) % slots) * ioBytes
      const t0 = process.hrtime.bigint()
      await io(op, offset, data)
      lat.push(Number(process.hrtime.bigint() - t0) / 1000)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  lat.sort((a, b) => a - b)
  const ops = lat.length
  return { layer: 'agent', op, kib: ioBytes / 1024, inFlight, opsPerSec: ops / seconds, meanUs: lat.reduce((a, b) => a + b, 0) / ops, p50Us: lat[ops >> 1], p99Us: lat[Math.floor(ops * 0.99)], mibPerSec: ops * ioBytes / seconds / MIB }
}

async function main (): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-latagent-'))
  if (process.env.BENCH_NO_BALLAST !== '1') holdGcBallast()  // as the mount agent does (lib/gc-ballast.ts)
  console.log(`load average ${os.loadavg()[0].toFixed(2)}`)
  const cluster = await startUkaiCluster({ dir })
  try {
    await createDisk(cluster.meta, { name: DISK, sizeBytes: DISK_BYTES, replicas: 2 })
    if (ONLY === undefined || ONLY === 'agent') {
      const agent = new Agent({ meta: cluster.meta, host: 'hv-lat', site: 'site-a', mountPoint: path.join(dir, 'none') })
      await agent.ready()
      try {
        const fh = await agent.openDisk(DISK, true)
        const disk = agent.disk(fh)
        const io = async (op: 'read' | 'write', offset: number, data: Buffer): Promise<void> => {
          if (op === 'write') await disk.write(offset, data)
          else await disk.read(offset, data.length)
        }
        await measureDisk(io, 'write', MIB, 4)  // fill part of the disk
        for (const ioBytes of [4096, 128 * 1024]) {
          for (const op of ['read', 'write'] as const) {
            for (const inFlight of [1, 4]) console.log(fmt(await measureDisk(io, op, ioBytes, inFlight)))
          }
        }
        await agent.release(fh)
      } finally {
        await agent.close()
      }
    }
    if (ONLY === undefined || ONLY === 'fuse') {
      const filename = path.join(cluster.mountPoint, DISK)
      for (const ioBytes of [4096, 128 * 1024, MIB]) {
        for (const op of ['read', 'write'] as const) {
          for (const inFlight of [1, 4]) {
            const pattern = ioBytes === 4096 ? (op === 'read' ? 'randread' : 'randwrite') : op
            const r = await runFio({ name: 'lat', pattern, blockSizeBytes: ioBytes, filename, fileSizeBytes: DISK_BYTES, numJobs: inFlight, splitFileAmongJobs: ioBytes !== 4096, runtimeSec: DURATION_MS / 1000, timeoutMs: 120_000 })
            const m = r.main
            console.log(fmt({ layer: 'fuse', op, kib: ioBytes / 1024, inFlight, opsPerSec: m.iops, meanUs: m.meanLatencyUsec, p50Us: NaN, p99Us: m.p99LatencyUsec, mibPerSec: m.bytesPerSec / MIB }))
          }
        }
      }
    }
  } finally {
    await cluster.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().then(() => process.exit(0), err => { console.error(err); process.exit(1) })
