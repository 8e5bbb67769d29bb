// CPU per replicated 4 KiB write (or BENCH_WRITE_BYTES), by process: an in-process Agent's VirtualDisk (no FUSE) writing
// to a 2-replica disk on two storage-node processes, with 1, 4 and 16 writes in flight. CPU time
// is what matters on this shared 2-core machine: throughput and latency there follow the other
// engineers' load, CPU seconds per write much less. Each process's idle CPU (timers, keepalives,
// ZooKeeper) over the same wall time is measured first and subtracted, so a slow run is not
// charged for its idling. Build with tsc, run `node dist/bench/write-cpu.js`
// (BENCH_WRITES, BENCH_IN_FLIGHT=1,4,16, BENCH_DISK_MIB=64). Used to measure the IoBatch stream (issue 13 part 3).
// Also reports the nodes' fsync calls per MiB written (each row ends with a flush, as a guest's
// fsync would): BENCH_FLUSH_BEHIND_MS sets the agent's flush-behind delay (0: off; issue 13 part 4).
// BENCH_NO_CHECKSUMS=1 starts the nodes with `--bench-no-checksums` (what checksums cost a write:
// run it with and without, issue 11 part 4, docs/performance.md "What end-to-end checksums cost").
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Agent } from '../src/agent/agent'
import { createDisk } from '../src/admin/disk-admin'
import { holdGcBallast } from '../src/lib/gc-ballast'
import { cpuSeconds } from './proc-stats'
import { startUkaiCluster } from './ukai-cluster'
import { fsyncCount } from '../test/helpers/replica-faults'

const MIB = 1024 * 1024
const DISK = 'wcpu'
const DISK_BYTES = Number(process.env.BENCH_DISK_MIB ?? 64) * MIB  // 1 GiB: 256 block files per node, as in the fio suite
const WRITES = Number(process.env.BENCH_WRITES ?? 3000)
// The size of each write (BENCH_WRITE_BYTES=1048576: the sequential job's 1 MiB writes, whose CPU per MiB
// docs/performance.md "Sequential writes: CPU per MiB" reads); a power of two up to the 4 MiB block.
const WRITE_BYTES = Number(process.env.BENCH_WRITE_BYTES ?? 4096)
const IN_FLIGHT = (process.env.BENCH_IN_FLIGHT ?? '1,4,16').split(',').map(Number)
const IDLE_MS = 1000
const FLUSH_BEHIND_MS = process.env.BENCH_FLUSH_BEHIND_MS === undefined ? undefined : Number(process.env.BENCH_FLUSH_BEHIND_MS)
const NO_CHECKSUMS = process.env.BENCH_NO_CHECKSUMS === '1'

type Cpu = () => number  // CPU seconds so far

async function measure (cpus: Record<string, Cpu>, body: () => Promise<void>): Promise<{ wallSec: number, cpuSec: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(cpus).map(([k, f]) => [k, f()]))
  const t0 = process.hrtime.bigint()
  await body()
  const wallSec = Number(process.hrtime.bigint() - t0) / 1e9
  return { wallSec, cpuSec: Object.fromEntries(Object.entries(cpus).map(([k, f]) => [k, f() - before[k]])) }
}

async function main (): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-wcpu-'))
  holdGcBallast()  // as the mount agent does
  console.log(`load average ${os.loadavg()[0].toFixed(2)}; ${WRITES} random ${WRITE_BYTES / 1024} KiB writes per row; flush-behind ${FLUSH_BEHIND_MS ?? 'default'} ms; checksums ${NO_CHECKSUMS ? 'off' : 'on'}`)
  const cluster = await startUkaiCluster({ dir, nodeArgs: NO_CHECKSUMS ? ['--bench-no-checksums'] : [] })
  try {
    await createDisk(cluster.meta, { name: DISK, sizeBytes: DISK_BYTES, replicas: 2 })
    const agent = new Agent({ meta: cluster.meta, host: 'hv-wcpu', site: 'site-a', mountPoint: path.join(dir, 'none'), flushBehindMs: FLUSH_BEHIND_MS })
    const fsyncs = async (): Promise<number> => (await Promise.all(cluster.nodes.map(async n => await fsyncCount(n.id, n.address)))).reduce((a, b) => a + b, 0)
    await agent.ready()
    const cpus: Record<string, Cpu> = {
      agent: () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6 }
    }
    for (const n of cluster.nodes) cpus[`node ${n.id}`] = () => cpuSeconds(n.pid) ?? NaN
    try {
      const fh = await agent.openDisk(DISK, true)
      const disk = agent.disk(fh)
      const data = Buffer.alloc(WRITE_BYTES, 0x5a)
      const slots = DISK_BYTES / WRITE_BYTES
      await disk.write(0, Buffer.alloc(MIB))  // the lease and the streams
      for (let b = 0; b < DISK_BYTES; b += 4 * MIB) await disk.write(b, Buffer.alloc(4 * MIB, 1))  // every block exists
      await disk.flush()
      for (const inFlight of IN_FLIGHT) {
        const idle = await measure(cpus, async () => await new Promise(resolve => setTimeout(resolve, IDLE_MS)))
        let next = 0
        const fsyncsBefore = await fsyncs()
        const run = await measure(cpus, async () => {
          const worker = async (): Promise<void> => {
            while (next < WRITES) {
              const i = next++
              await disk.write(((i * 7919) % slots) * WRITE_BYTES, data)
            }
          }
          await Promise.all(Array.from({ length: inFlight }, worker))
          await disk.flush()
        })
        const perMiB = (await fsyncs() - fsyncsBefore) / (WRITES * WRITE_BYTES / MIB)
        const cols = Object.keys(cpus).map(k => {
          const busy = run.cpuSec[k] - idle.cpuSec[k] / idle.wallSec * run.wallSec
          return `${k} ${(busy / WRITES * 1e6).toFixed(0).padStart(4)} µs`
        })
        console.log(`x${String(inFlight).padEnd(3)} ${(WRITES / run.wallSec).toFixed(0).padStart(6)} writes/s  node fsyncs per MiB ${perMiB.toFixed(1)}  CPU per write (idle subtracted): ${cols.join(', ')}`)
      }
      await agent.release(fh)
    } finally {
      await agent.close()
    }
  } finally {
    await cluster.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().then(() => process.exit(0), err => { console.error(err); process.exit(1) })
