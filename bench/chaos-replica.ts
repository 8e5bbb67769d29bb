// Chaos cases for one replica of a two-replica disk, under writers through the FUSE mount:
//   - SIGSTOP a node for 60 s (a hung replica): writes must go on, waiting at most the hung
//     bound (REPLICA_HUNG_MS_DEFAULT, 2.5 s) once; before it they waited the 10 s call deadline
//     for every newly touched block (0.4 MB/s, longest gap 20 s: issue 9);
//   - kill -9 a node with writes in flight, restart it: no acknowledged write lost.
// Every acknowledged 256 KiB chunk's SHA-256 is kept; at the end every chunk is read back and
// compared. Healing = `ukai disk repair` after the fault ended, until no replica is stale.
// The lead wires runReplicaChaos into `npm run chaos` (bench/chaos.ts).
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { cliMainPath, daemonEnv, startStorageNode } from '../src/dev/processes'
import { signalIfOurs, waitForExit } from '../src/dev/pids'
import { createDisk } from '../src/admin/disk-admin'
import { BENCH_HOST, startUkaiCluster, type UkaiCluster } from './ukai-cluster'
import type { ChaosRow } from './chaos-row'

const KiB = 1024
const MiB = 1024 * KiB
const DISK_BYTES = 256 * MiB
const BLOCK_BYTES = 1 * MiB
const CHUNK_BYTES = 256 * KiB
const WRITERS = 4
// How long the node stays stopped (UKAI_CHAOS_HUNG_MS shortens it for a quick look).
const HUNG_FOR_MS = Number(process.env.UKAI_CHAOS_HUNG_MS ?? 60_000)
const WARMUP_MS = 3_000
const KILLED_FOR_MS = 3_000
const AFTER_FAULT_MS = 5_000
const KILL_WAIT_MS = 10_000
const REPAIR_TIMEOUT_MS = 300_000

interface Writer {
  hashes: Map<number, string>      // chunk index → SHA-256 of its last acknowledged content
  unknown: Set<number>             // chunks whose last write failed: content undefined
  bytesWritten: number
  writesFailed: number
  longestStallMs: number
}

// WRITERS loops over disjoint chunk ranges (exact expectations with writes in flight together)
// until stop(); each writes a random whole chunk and records its hash once acknowledged.
async function writeUntil (file: string, stop: () => boolean, w: Writer): Promise<void> {
  const fh = await fs.promises.open(file, 'r+')
  try {
    const chunks = DISK_BYTES / CHUNK_BYTES
    const per = chunks / WRITERS
    let seq = 0
    await Promise.all(Array.from({ length: WRITERS }, async (_, k) => {
      while (!stop()) {
        const chunk = k * per + Math.floor(Math.random() * per)
        const data = Buffer.allocUnsafe(CHUNK_BYTES)
        data.fill(seq++ & 0xff)
        data.writeDoubleLE(Math.random(), 0)
        data.writeUInt32LE(chunk, 8)
        const started = Date.now()
        try {
          await fh.write(data, 0, CHUNK_BYTES, chunk * CHUNK_BYTES)
          w.hashes.set(chunk, sha(data))
          w.unknown.delete(chunk)
          w.bytesWritten += CHUNK_BYTES
        } catch {
          w.writesFailed++
          w.unknown.add(chunk)
        }
        w.longestStallMs = Math.max(w.longestStallMs, Date.now() - started)
      }
    }))
    await fh.sync()
  } finally {
    await fh.close()
  }
}

function sha (b: Buffer): string { return createHash('sha256').update(b).digest('hex') }

async function verify (file: string, w: Writer): Promise<{ verified: number, lost: number }> {
  const fh = await fs.promises.open(file, 'r')
  try {
    let verified = 0
    let lost = 0
    const buf = Buffer.alloc(CHUNK_BYTES)
    for (const [chunk, hash] of w.hashes) {
      if (w.unknown.has(chunk)) continue
      await fh.read(buf, 0, CHUNK_BYTES, chunk * CHUNK_BYTES)
      if (sha(buf) === hash) verified += CHUNK_BYTES
      else lost += CHUNK_BYTES
    }
    return { verified, lost }
  } finally {
    await fh.close()
  }
}

function runCli (args: string[], zk: string, timeoutMs: number): Promise<{ code: number, out: string }> {
  return new Promise((resolve) => {
    const env = { ...daemonEnv(), UKAI_ZK: zk }
    const child = spawn(process.execPath, [cliMainPath(), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { out += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, out }) })
  })
}

// Repairs the disk's stale replicas; the time it took, or null when it did not finish.
async function heal (c: UkaiCluster, disk: string, log: (s: string) => void): Promise<number | null> {
  const started = Date.now()
  const r = await runCli(['disk', 'repair', disk], c.zk.connectString, REPAIR_TIMEOUT_MS)
  if (r.code !== 0) { log(`repair of ${disk} failed (${r.code}): ${r.out.trim().split('\n').slice(-2).join(' | ')}`); return null }
  return Date.now() - started
}

function newWriter (): Writer {
  return { hashes: new Map(), unknown: new Set(), bytesWritten: 0, writesFailed: 0, longestStallMs: 0 }
}

async function row (fault: string, c: UkaiCluster, file: string, w: Writer, healedMs: number | null, notes: string): Promise<ChaosRow> {
  const { verified, lost } = await verify(file, w)
  return { fault, bytesWritten: w.bytesWritten, bytesVerified: verified, bytesLost: lost, writesFailed: w.writesFailed, longestStallMs: w.longestStallMs, healedMs, notes }
}

async function hungReplica (c: UkaiCluster, log: (s: string) => void): Promise<ChaosRow> {
  const disk = 'chaos-hung'
  await createDisk(c.meta, { name: disk, sizeBytes: DISK_BYTES, blockSizeBytes: BLOCK_BYTES, nodes: c.nodes.map(n => n.id) })
  const file = path.join(c.mountPoint, disk)
  const victim = c.nodes[1]
  const w = newWriter()
  let endAtMs = Infinity
  let stopped = false
  const writing = writeUntil(file, () => Date.now() >= endAtMs, w)
  try {
    await sleep(WARMUP_MS)
    const before = w.bytesWritten
    log(`SIGSTOP ${victim.id} (pid ${victim.pid}) for ${HUNG_FOR_MS} ms`)
    signalIfOurs(victim.pid, victim.argv, 'SIGSTOP')
    stopped = true
    const stopAtMs = Date.now()
    endAtMs = stopAtMs + HUNG_FOR_MS
    await writing
    const duringMiBps = (w.bytesWritten - before) / MiB / (HUNG_FOR_MS / 1000)
    signalIfOurs(victim.pid, victim.argv, 'SIGCONT')
    stopped = false
    log(`SIGCONT ${victim.id}; ${duringMiBps.toFixed(1)} MiB/s while it was stopped, longest write ${w.longestStallMs} ms`)
    const healedMs = await heal(c, disk, log)
    return await row(`SIGSTOP one of 2 replicas for ${Math.round(HUNG_FOR_MS / 1000)} s`, c, file, w, healedMs,
      `${duringMiBps.toFixed(1)} MiB/s during the stop; writers: ${WRITERS} × 256 KiB; healed = ukai disk repair after SIGCONT`)
  } finally {
    if (stopped) signalIfOurs(victim.pid, victim.argv, 'SIGCONT')
    endAtMs = 0
    await writing.catch(() => undefined)
  }
}

async function killedReplica (c: UkaiCluster, log: (s: string) => void): Promise<ChaosRow> {
  const disk = 'chaos-kill'
  await createDisk(c.meta, { name: disk, sizeBytes: DISK_BYTES, blockSizeBytes: BLOCK_BYTES, nodes: c.nodes.map(n => n.id) })
  const file = path.join(c.mountPoint, disk)
  const i = 1
  const victim = c.nodes[i]
  const w = newWriter()
  let endAtMs = Infinity
  const writing = writeUntil(file, () => Date.now() >= endAtMs, w)
  try {
    await sleep(WARMUP_MS)
    log(`kill -9 ${victim.id} (pid ${victim.pid}) with ${WRITERS} writers in flight`)
    signalIfOurs(victim.pid, victim.argv, 'SIGKILL')
    if (!await waitForExit(victim.pid, KILL_WAIT_MS)) throw new Error(`${victim.id} pid ${victim.pid} survived SIGKILL`)
    await sleep(KILLED_FOR_MS)
    const restartedAt = Date.now()
    // Same id, data dir and port; put in the cluster's list so that its stop() stops this one.
    c.nodes[i] = await startStorageNode({ dir: path.dirname(victim.dataDir), dataDir: victim.dataDir, id: victim.id, site: victim.site, zk: c.zk.connectString, listen: victim.address, capacity: '50GiB', extraArgs: ['--host', BENCH_HOST] })
    log(`restarted ${victim.id} in ${Date.now() - restartedAt} ms`)
    endAtMs = Date.now() + AFTER_FAULT_MS
    await writing
    const healedMs = await heal(c, disk, log)
    return await row('kill -9 one of 2 replicas with writes in flight, restart after 3 s', c, file, w, healedMs,
      `writers: ${WRITERS} × 256 KiB; healed = ukai disk repair after the restart`)
  } finally {
    endAtMs = 0
    await writing.catch(() => undefined)
  }
}

function sleep (ms: number): Promise<void> { return new Promise(resolve => setTimeout(resolve, ms)) }

export async function runReplicaChaos (opts: { log: (s: string) => void }): Promise<ChaosRow[]> {
  const rows: ChaosRow[] = []
  for (const [name, run] of [['hung replica', hungReplica], ['killed replica', killedReplica]] as const) {
    // A fresh cluster per case: one case's stale replicas do not shape the next.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-chaos-replica-'))
    let c: UkaiCluster | undefined
    try {
      c = await startUkaiCluster({ dir })
      opts.log(`${name}: cluster up in ${dir}`)
      const r = await run(c, opts.log)
      opts.log(`${name}: ${JSON.stringify(r)}`)
      rows.push(r)
    } finally {
      await c?.stop().catch((err: Error) => opts.log(`${name}: teardown: ${err.message}`))
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  return rows
}

if (require.main === module) {
  runReplicaChaos({ log: (s) => process.stderr.write(`${s}\n`) }).then((rows) => {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`)
  }, (err) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
}
