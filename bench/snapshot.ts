// Snapshots: commit time against disk size, and what the first write after a snapshot costs.
//
//   node dist/bench/snapshot.js        (~1-2 minutes; also part of `npm run bench`, see run.ts)
//
// Setup: bench/ukai-cluster.ts (ZooKeeper, two storage nodes, one mount agent; 2 replicas,
// 4 MiB blocks). A 1 GiB disk filled through the mount (1 MiB writes) and an empty 1 TiB disk.
// 1. Commit time, COMMITS times per disk, measured around snapshot-admin's createSnapshot in this
//    process (a CLI run adds ~1 s of Node start-up and ZooKeeper connect on top):
//      holder  the disk is open on the mount and its agent holds the lease: the request path
//              (gate new writes, drain, flush, one ZooKeeper transaction)
//      idle    nobody holds the lease: the admin takes it (fencing the nodes), commits, releases
//    The 1 GiB / 1 TiB ratio should be ≈ 1: a commit touches no per-block state.
// 2. 4 KiB writes through the mount at one random offset in each of WRITES distinct 4 MiB
//    blocks of the filled disk, one at a time: right after a snapshot (each is the first write of
//    its block in the new epoch: the node clones the block's 4 MiB version first), then the same
//    offsets again (the version exists: a plain write). Mean and p99 of each.
// Results: bench/results/snapshot-<date>.json and bench/results/latest-snapshot.json.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { createDisk } from '../src/admin/disk-admin'
import { createSnapshot } from '../src/admin/snapshot-admin'
import { Cleanup } from './cleanup'
import { BENCH_SITE, startUkaiCluster } from './ukai-cluster'
import { RESULTS_DIR } from './bench-env'

const KIB = 1024
const MIB = 1024 * KIB
const GIB = 1024 * MIB
const TIB = 1024 * GIB
const BLOCK_BYTES = 4 * MIB
const COMMITS = 10
const WRITES = 200
const WRITE_BYTES = 4 * KIB

interface Stats { n: number, meanMs: number, p50Ms: number, p99Ms: number, maxMs: number }

function stats (ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b)
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]
  const round = (x: number): number => Math.round(x * 1000) / 1000
  return { n: s.length, meanMs: round(s.reduce((a, b) => a + b, 0) / s.length), p50Ms: round(q(0.5)), p99Ms: round(q(0.99)), maxMs: round(s[s.length - 1]) }
}

async function main (): Promise<void> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-snapshot-bench-'))
  const cleanup = new Cleanup()
  if (process.env.BENCH_KEEP !== '1') cleanup.add(`remove ${workDir}`, () => fs.rmSync(workDir, { recursive: true, force: true }))
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { cleanup.run().finally(() => process.exit(130)) })
  try {
    const cluster = await startUkaiCluster({ dir: workDir })
    cleanup.add('stop the cluster', () => cluster.stop())
    const meta = cluster.meta
    const ctx = { meta, host: 'bench-admin' }
    await createDisk(meta, { name: 'small', sizeBytes: GIB, blockSizeBytes: BLOCK_BYTES, site: BENCH_SITE })
    await createDisk(meta, { name: 'huge', sizeBytes: TIB, blockSizeBytes: BLOCK_BYTES, site: BENCH_SITE })
    const small = path.join(cluster.mountPoint, 'small')
    const huge = path.join(cluster.mountPoint, 'huge')

    process.stdout.write('filling the 1 GiB disk through the mount …\n')
    const fillStart = performance.now()
    const chunk = Buffer.alloc(MIB)
    let fh = await fs.promises.open(small, 'r+')
    for (let off = 0; off < GIB; off += MIB) {
      chunk.fill((off / MIB) & 0xff)
      chunk.writeUInt32LE(off / MIB, 0)
      await fh.write(chunk, 0, MIB, off)
    }
    await fh.sync()
    await fh.close()
    process.stdout.write(`filled in ${((performance.now() - fillStart) / 1000).toFixed(1)} s\n`)

    let seq = 0
    const commitTimes = async (name: string, file: string, holder: boolean): Promise<Stats> => {
      const ms: number[] = []
      const f = holder ? await fs.promises.open(file, 'r+') : null
      try {
        for (let i = 0; i < COMMITS; i++) {
          // A write makes (or keeps) the agent the lease holder and gives the commit something to drain.
          if (f !== null) await f.write(Buffer.alloc(WRITE_BYTES, i), 0, WRITE_BYTES, (i * 7919 % 256) * BLOCK_BYTES)
          const t0 = performance.now()
          await createSnapshot(ctx, name, `c${seq++}`)
          ms.push(performance.now() - t0)
        }
      } finally {
        await f?.close()
      }
      return stats(ms)
    }
    const commit = {
      holder: { '1GiB': await commitTimes('small', small, true), '1TiB': await commitTimes('huge', huge, true) },
      idle: { '1GiB': await commitTimes('small', small, false), '1TiB': await commitTimes('huge', huge, false) }
    }
    const ratio = {
      holder: Math.round(commit.holder['1GiB'].p50Ms / commit.holder['1TiB'].p50Ms * 100) / 100,
      idle: Math.round(commit.idle['1GiB'].p50Ms / commit.idle['1TiB'].p50Ms * 100) / 100
    }

    // First write after a snapshot vs a plain write: 4 KiB at a random offset of distinct blocks.
    const blocks = GIB / BLOCK_BYTES
    const offsets = Array.from({ length: WRITES }, (_, i) => ((i * 37) % blocks) * BLOCK_BYTES + Math.floor(Math.random() * (BLOCK_BYTES / WRITE_BYTES)) * WRITE_BYTES)
    const data = Buffer.alloc(WRITE_BYTES, 0x5a)
    fh = await fs.promises.open(small, 'r+')
    const timedWrites = async (): Promise<number[]> => {
      const ms: number[] = []
      for (const off of offsets) {
        const t0 = performance.now()
        await fh.write(data, 0, WRITE_BYTES, off)
        ms.push(performance.now() - t0)
      }
      return ms
    }
    await fh.write(data, 0, WRITE_BYTES, 0)  // take the lease before timing
    await createSnapshot(ctx, 'small', 'before-writes')
    const first = stats(await timedWrites())
    const plain = stats(await timedWrites())
    await fh.close()

    const result = {
      date: new Date().toISOString(),
      setup: { nodes: 2, replicas: 2, blockSizeBytes: BLOCK_BYTES, commits: COMMITS, writes: WRITES, writeBytes: WRITE_BYTES, smallDiskBytes: GIB, hugeDiskBytes: TIB },
      commitMs: commit,
      commitRatio1GiBOver1TiB: ratio,
      firstWriteAfterSnapshotMs: first,
      plainWriteMs: plain,
      firstOverPlainMean: Math.round(first.meanMs / plain.meanMs * 100) / 100
    }
    fs.mkdirSync(RESULTS_DIR, { recursive: true })
    const name = `snapshot-${result.date.replace(/[:.]/g, '-')}.json`
    fs.writeFileSync(path.join(RESULTS_DIR, name), JSON.stringify(result, null, 2) + '\n')
    fs.writeFileSync(path.join(RESULTS_DIR, 'latest-snapshot.json'), JSON.stringify(result, null, 2) + '\n')
    const row = (label: string, s: Stats): string => `  ${label.padEnd(34)} mean ${s.meanMs.toFixed(2).padStart(8)} ms  p50 ${s.p50Ms.toFixed(2).padStart(8)} ms  p99 ${s.p99Ms.toFixed(2).padStart(8)} ms\n`
    process.stdout.write('\nsnapshot commit (in-process, no CLI start-up)\n')
    process.stdout.write(row('1 GiB (filled), lease holder', commit.holder['1GiB']) + row('1 TiB (empty), lease holder', commit.holder['1TiB']))
    process.stdout.write(row('1 GiB (filled), nobody writing', commit.idle['1GiB']) + row('1 TiB (empty), nobody writing', commit.idle['1TiB']))
    process.stdout.write(`  p50 ratio 1 GiB / 1 TiB: holder ${ratio.holder}, idle ${ratio.idle} (≈ 1 wanted)\n`)
    process.stdout.write('\n4 KiB writes through the mount, one at a time, distinct 4 MiB blocks\n')
    process.stdout.write(row('first write after a snapshot (CoW)', first) + row('plain write (version exists)', plain))
    process.stdout.write(`  first / plain (mean): ${result.firstOverPlainMean}\n\nresults: bench/results/${name}\n`)
  } finally {
    await cleanup.run()
  }
}

main().catch((err) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
