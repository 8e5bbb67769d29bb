// Incremental export size against the bytes actually changed (issue 4: ≤ 1.1× plus block
// rounding), for a few change patterns, plus export and import throughput.
//
//   node dist/bench/export.js          (~1 minute; also `BENCH_SUITES=export npm run bench`)
//
// Setup: a private cluster (ZooKeeper, 2 storage nodes, one agent; bench/ukai-cluster.ts). Per
// block size (4 MiB, the default, and 64 KiB), a 256 MiB disk gets 64 MiB of random data and
// snapshot s0; then each pattern writes through the mount, a snapshot is taken, and
// `ukai export --from <previous> DISK@<new>` writes the increment. Reported per pattern: bytes
// changed (written), blocks touched, those blocks' bytes ("rounded"), the stream's size, and
// stream / rounded (the floor: ≤ 1.1). The import of each increment onto a restored copy is
// checked to reproduce the source snapshot (sha256 of both raw exports).
// Results: bench/results/export-<date>.json and bench/results/latest-export.json.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { Cleanup } from './cleanup'
import { startUkaiCluster } from './ukai-cluster'
import { RESULTS_DIR } from './bench-env'

const KIB = 1024
const MIB = 1024 * KIB
const DISK_BYTES = 256 * MIB
const FILL_BYTES = 64 * MIB
const FLOOR_RATIO = 1.1

interface Pattern { name: string, writes: (rand: () => number) => Array<{ offset: number, length: number }> }

const PATTERNS: Pattern[] = [
  { name: 'none (no writes)', writes: () => [] },
  { name: 'sequential 16 MiB, aligned', writes: () => [{ offset: 8 * MIB, length: 16 * MIB }] },
  { name: 'sequential 10 MiB at +1000 B', writes: () => [{ offset: 40 * MIB + 1000, length: 10 * MIB }] },
  { name: '256 random 4 KiB writes', writes: (r) => Array.from({ length: 256 }, () => ({ offset: Math.floor(r() * (DISK_BYTES / 4096)) * 4096, length: 4096 })) },
  { name: '32 random 256 KiB writes', writes: (r) => Array.from({ length: 32 }, () => ({ offset: Math.floor(r() * (DISK_BYTES / (256 * KIB))) * 256 * KIB, length: 256 * KIB })) },
  { name: 'same 1 MiB rewritten 8 times', writes: () => Array.from({ length: 8 }, () => ({ offset: 100 * MIB, length: MIB })) }
]

function rng (seed: number): () => number {
  let x = seed >>> 0
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000 }
}

function ukai (args: string[], zk: string): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const env = daemonEnv()
    env.UKAI_ZK = zk
    const child = spawn(process.execPath, [cliMainPath(), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
  })
}

async function must (args: string[], zk: string): Promise<string> {
  const r = await ukai(args, zk)
  if (r.code !== 0) throw new Error(`ukai ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

async function sha256File (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const c of fs.createReadStream(file)) h.update(c as Buffer)
  return h.digest('hex')
}

export interface PatternResult {
  blockSizeBytes: number
  pattern: string
  changedBytes: number     // bytes written (overlaps counted once)
  touchedBlocks: number
  roundedBytes: number     // touched blocks × block size
  streamBytes: number
  ratioToRounded: number
  ratioToChanged: number | null
  pass: boolean
  exportSeconds: number
  importSeconds: number
  roundTripEqual: boolean
}

async function runBlockSize (zk: string, mountPoint: string, dir: string, blockSize: string, blockSizeBytes: number): Promise<PatternResult[]> {
  const disk = `exp-${blockSize}`
  await must(['disk', 'create', disk, '--size', String(DISK_BYTES), '--block-size', blockSize], zk)
  const rand = rng(blockSizeBytes)
  const fh = await fs.promises.open(path.join(mountPoint, disk), 'r+')
  const buf = Buffer.alloc(MIB)
  const write = async (offset: number, length: number): Promise<void> => {
    for (let at = 0; at < length; at += MIB) {
      const n = Math.min(MIB, length - at)
      for (let i = 0; i < n; i += 4) buf.writeUInt32LE((rand() * 0x100000000) >>> 0, i)
      await fh.write(buf, 0, n, offset + at)
    }
  }
  try {
    await write(0, FILL_BYTES)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await must(['snapshot', 'create', `${disk}@s0`], zk)
  // A restored copy that each increment is applied onto.
  const full = path.join(dir, `${disk}-s0.stream`)
  await must(['export', '--format', 'stream', `${disk}@s0`, full], zk)
  await must(['import', full, `${disk}-copy`], zk)
  const out: PatternResult[] = []
  let prev = 's0'
  for (let i = 0; i < PATTERNS.length; i++) {
    const p = PATTERNS[i]
    const writes = p.writes(rand)
    const touched = new Set<number>()
    const bytes = new Set<number>() // 4 KiB granules written (all patterns are 4 KiB-granular but one)
    let changedBytes = 0
    const f = await fs.promises.open(path.join(mountPoint, disk), 'r+')
    try {
      for (const w of writes) {
        await (async () => { const saved = f; const b = Buffer.alloc(w.length); for (let k = 0; k < b.length; k += 4) b.writeUInt32LE((rand() * 0x100000000) >>> 0, k); await saved.write(b, 0, b.length, w.offset) })()
        for (let b = Math.floor(w.offset / blockSizeBytes); b <= Math.floor((w.offset + w.length - 1) / blockSizeBytes); b++) touched.add(b)
        for (let g = Math.floor(w.offset / 512); g < Math.ceil((w.offset + w.length) / 512); g++) bytes.add(g)
      }
      await f.sync()
    } finally {
      await f.close()
    }
    changedBytes = bytes.size * 512
    const snap = `s${i + 1}`
    await must(['snapshot', 'create', `${disk}@${snap}`], zk)
    const inc = path.join(dir, `${disk}-${prev}-${snap}.stream`)
    let t0 = Date.now()
    const summary = JSON.parse(await must(['export', '--from', prev, `${disk}@${snap}`, inc, '--json'], zk))
    const exportSeconds = (Date.now() - t0) / 1000
    t0 = Date.now()
    await must(['import', '--incremental', inc, `${disk}-copy`], zk)
    const importSeconds = (Date.now() - t0) / 1000
    const a = path.join(dir, 'a.raw')
    const b = path.join(dir, 'b.raw')
    await must(['export', `${disk}@${snap}`, a], zk)
    await must(['export', `${disk}-copy@${snap}`, b], zk)
    const roundTripEqual = await sha256File(a) === await sha256File(b)
    await fs.promises.rm(a)
    await fs.promises.rm(b)
    const streamBytes = (await fs.promises.stat(inc)).size
    const roundedBytes = touched.size * blockSizeBytes
    // The header and trailer (a few hundred bytes) are what an empty increment costs.
    const ratioToRounded = roundedBytes > 0 ? streamBytes / roundedBytes : 0
    const r: PatternResult = {
      blockSizeBytes, pattern: p.name, changedBytes, touchedBlocks: touched.size, roundedBytes, streamBytes,
      ratioToRounded, ratioToChanged: changedBytes > 0 ? streamBytes / changedBytes : null,
      pass: roundedBytes > 0 ? ratioToRounded <= FLOOR_RATIO : streamBytes < 4096, exportSeconds, importSeconds, roundTripEqual
    }
    if (summary.blocks !== touched.size) process.stdout.write(`  note: export read ${summary.blocks} blocks, ${touched.size} were touched\n`)
    out.push(r)
    process.stdout.write(`  ${blockSize.padEnd(4)} ${p.name.padEnd(30)} changed ${fmt(changedBytes).padStart(9)}  blocks ${String(touched.size).padStart(4)}  rounded ${fmt(roundedBytes).padStart(9)}  stream ${fmt(streamBytes).padStart(9)}  ` +
      `stream/rounded ${roundedBytes > 0 ? ratioToRounded.toFixed(4) : '   -  '}  ${r.pass ? 'PASS' : 'BELOW'}  round trip ${roundTripEqual ? 'equal' : 'DIFFERENT'}\n`)
    prev = snap
  }
  return out
}

function fmt (n: number): string {
  return n >= MIB ? `${(n / MIB).toFixed(2)} MiB` : n >= KIB ? `${(n / KIB).toFixed(1)} KiB` : `${n} B`
}

async function main (): Promise<void> {
  const cleanup = new Cleanup()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { cleanup.run().finally(() => process.exit(130)) })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-export-bench-'))
  cleanup.add(`remove ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }))
  try {
    const cluster = await startUkaiCluster({ dir: path.join(dir, 'cluster') })
    cleanup.add('stop the cluster', () => cluster.stop())
    const zk = cluster.zk.connectString
    process.stdout.write('incremental export size vs bytes changed (floor: stream ≤ 1.1 × touched blocks\' bytes)\n')
    const results: PatternResult[] = []
    results.push(...await runBlockSize(zk, cluster.mountPoint, dir, '4M', 4 * MIB))
    results.push(...await runBlockSize(zk, cluster.mountPoint, dir, '64K', 64 * KIB))
    // Full export throughput of the 64 MiB written into the 4 MiB-block disk.
    const t0 = Date.now()
    const full = JSON.parse(await must(['export', 'exp-4M@s0', path.join(dir, 'full.raw'), '--json'], zk))
    const fullSeconds = (Date.now() - t0) / 1000
    process.stdout.write(`full raw export of ${fmt(full.dataBytes)} written (256 MiB disk): ${fullSeconds.toFixed(2)} s, ${(full.dataBytes / MIB / fullSeconds).toFixed(0)} MiB/s including CLI start\n`)
    const report = { kind: 'export', date: new Date().toISOString(), host: os.hostname(), floorRatio: FLOOR_RATIO, results, fullExport: { dataBytes: full.dataBytes, seconds: fullSeconds } }
    fs.mkdirSync(RESULTS_DIR, { recursive: true })
    const json = JSON.stringify(report, null, 2) + '\n'
    fs.writeFileSync(path.join(RESULTS_DIR, `export-${report.date.replace(/[:.]/g, '-')}.json`), json)
    fs.writeFileSync(path.join(RESULTS_DIR, 'latest-export.json'), json)
    const failed = results.filter(r => !r.pass || !r.roundTripEqual)
    process.stdout.write(failed.length === 0 ? 'all patterns within the floor; every round trip equal\n' : `${failed.length} pattern(s) below the floor or not equal\n`)
  } finally {
    await cleanup.run()
  }
}

if (require.main === module) main().catch((err) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
