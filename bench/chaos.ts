// Fault cases against a real cluster, each under a checksummed writer through the FUSE mount:
// what a guest sees (failed writes, the longest stall), whether every byte survives, and how
// long the cluster takes to heal.
//
//   npm run chaos                      all cases
//   node dist/bench/chaos.js zk-outages    one case (after scripts/setup.sh)
//
// Every case returns rows of one shape (ChaosRow); the runner prints them as a table, writes
// bench/results/chaos-<date>.json and bench/results/latest-chaos.json, and exits non-zero when
// any bytes were lost or a case failed.
//
// Cases:
//   zk-outages  ZooKeeper killed (SIGKILL) and restarted CHAOS_ZK_OUTAGES times (10), each outage
//               CHAOS_ZK_OUTAGE_MIN_SEC..CHAOS_ZK_OUTAGE_MAX_SEC long (10..60, spread evenly, in
//               a shuffled order), CHAOS_ZK_GAP_SEC (5) apart, with the daemons' default 10 s
//               session timeout. After each outage: the bytes are read back and compared, the
//               lease must still be the agent's at the same epoch, and at the end every daemon
//               must still be the process it was (same PIDs). ~10 min with the defaults.
//   replica-faults  one replica SIGSTOPped for 60 s under writers (the hung-replica bound), and
//               kill -9 of a node with writes in flight, then restarted and repaired. ~2 min.
//   node-killed, node-restarted, flip-bytes, controller-killed-mid-relocation,
//   relocation-cli-killed, controller-killed-mid-repair, drain-under-writes, zk-member-lost,
//   node-full-rereplication   issue 11's fault cases, healed with no operator command
//               (bench/chaos-heal.ts); 1–2 min each.
// BENCH_KEEP=1 keeps the temp dirs (logs) after the run.
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Table from 'cli-table3'
import { startAgent, startNode, startZk, type TestLike } from '../test/helpers/cluster'
import { cliJson, runCli } from '../test/helpers/cli'
import { ModelWriter, isAlive } from '../test/helpers/model-writer'
import { rng } from '../test/helpers/model'
import { Cleanup } from './cleanup'
import { RESULTS_DIR, envNumber } from './bench-env'
import { runReplicaChaos } from './chaos-replica'
import { HEAL_CASES, runHealCase } from './chaos-heal'
import type { ChaosRow } from './chaos-row'

export type { ChaosRow }

export interface ChaosCase {
  name: string
  run: (ctx: ChaosContext) => Promise<ChaosRow[]>
}

export interface ChaosContext {
  t: TestLike           // fixtures' teardown goes to the runner's cleanup
  progress: (msg: string) => void
}

const MIB = 1024 * 1024

function say (msg: string): void {
  process.stdout.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

// ---- case: zk-outages ------------------------------------------------------------------------

interface DiskInfo { leaseHolder: string | null, leaseEpoch: number, staleBlocks: number }

const zkOutages: ChaosCase = {
  name: 'zk-outages',
  run: async ({ t, progress }) => {
    const count = envNumber('CHAOS_ZK_OUTAGES', 10)
    const minSec = envNumber('CHAOS_ZK_OUTAGE_MIN_SEC', 10)
    const maxSec = envNumber('CHAOS_ZK_OUTAGE_MAX_SEC', 60)
    const gapSec = envNumber('CHAOS_ZK_GAP_SEC', 5)
    const diskBytes = envNumber('CHAOS_DISK_MIB', 64) * MIB
    // Evenly spread over [min, max], shuffled: long and short outages alternate unpredictably.
    const rand = rng(20261206)
    const durationsSec = Array.from({ length: count }, (_, i) => count === 1 ? minSec : Math.round(minSec + (maxSec - minSec) * i / (count - 1)))
    for (let i = durationsSec.length - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [durationsSec[i], durationsSec[j]] = [durationsSec[j], durationsSec[i]] }
    progress(`${count} outages of ${durationsSec.join(', ')} s, ${gapSec} s apart`)

    const zk = await startZk(t)
    const zks = zk.connectString
    const nodes = [await startNode(t, { zk, id: 'c1', site: 's' }), await startNode(t, { zk, id: 'c2', site: 's' })]
    const agent = await startAgent(t, { zk, host: 'hv-chaos', site: 's' })
    const created = await runCli(['disk', 'create', 'chaos', '--size', String(diskBytes), '--site', 's'], { zk: zks })
    if (created.code !== 0) throw new Error(`disk create: ${created.stderr}`)
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'chaos'), 'r+')
    t.teardown(async () => { await fh.close().catch(() => {}) })
    const writer = new ModelWriter(fh, diskBytes, { seed: 4242, maxWriteBytes: 64 * 1024, pauseMs: 2 })
    await writer.writeOnce()
    const start = await cliJson<DiskInfo>(['disk', 'info', 'chaos'], zks)
    const pids = new Map<string, number>([['zk-agent hv-chaos', agent.pid], ...nodes.map((n, i): [string, number] => [`node c${i + 1}`, n.pid])])

    const rows: ChaosRow[] = []
    writer.start()
    for (const [i, sec] of durationsSec.entries()) {
      await sleep(gapSec * 1000)
      const bytesBefore = writer.stats.bytesWritten
      const failedBefore = writer.stats.writesFailed
      writer.window()
      await zk.kill('SIGKILL')
      const outageStarted = Date.now()
      while (Date.now() - outageStarted < sec * 1000) {
        await sleep(Math.min(5000, sec * 1000 - (Date.now() - outageStarted)))
        progress(`outage ${i + 1}/${count} (${sec} s): ${Math.round((Date.now() - outageStarted) / 1000)} s, ${writer.stats.writes} writes, ${writer.stats.writesFailed} failed`)
      }
      await zk.restart()
      const restartedAt = Date.now()
      // Healed: ZooKeeper answers, both nodes are registered alive, the lease is the agent's.
      let healedMs: number | null = null
      let info: DiskInfo | null = null
      while (Date.now() - restartedAt < 120_000) {
        const nodeRows = await cliJson<Array<{ alive: unknown }>>(['node', 'list'], zks).catch(() => null)
        info = await cliJson<DiskInfo>(['disk', 'info', 'chaos'], zks).catch(() => null)
        if (nodeRows !== null && nodeRows.every(r => r.alive !== null) && info?.leaseHolder === 'hv-chaos') { healedMs = Date.now() - restartedAt; break }
        await sleep(250)
      }
      await writer.stop()
      const { longestStallMs } = writer.window()
      await fh.sync()
      const v = await writer.verify()
      const replaced = countSessionReplacements([agent.logFile, ...nodes.map(n => n.logFile)])
      const dead = [...pids].filter(([, pid]) => !isAlive(pid)).map(([name, pid]) => `${name} (pid ${pid})`)
      const notes = [
        `lease ${info?.leaseHolder ?? 'none'} epoch ${info?.leaseEpoch ?? '?'}${info?.leaseEpoch === start.leaseEpoch ? ' (unchanged)' : ` (was ${start.leaseEpoch})`}`,
        info !== null && info.staleBlocks > 0 ? `${info.staleBlocks} stale blocks` : '',
        `sessions replaced so far: ${replaced}`,
        dead.length > 0 ? `DEAD: ${dead.join(', ')}` : '',
        v.firstMismatchAt !== null ? `first mismatch at byte ${v.firstMismatchAt}` : ''
      ].filter(s => s !== '').join('; ')
      rows.push({
        fault: `zk-outage ${i + 1}/${count} ${sec}s`,
        bytesWritten: writer.stats.bytesWritten - bytesBefore,
        bytesVerified: v.bytesVerified,
        bytesLost: v.bytesLost,
        writesFailed: writer.stats.writesFailed - failedBefore,
        longestStallMs,
        healedMs,
        notes
      })
      progress(`outage ${i + 1}/${count} done: healed in ${healedMs ?? 'never'} ms, longest write ${longestStallMs} ms, ${v.bytesLost} bytes lost; ${notes}`)
      if (dead.length > 0) throw new Error(`daemons died: ${dead.join(', ')}`)
      writer.start()
    }
    await writer.stop()
    if (writer.stats.failures.length > 0) progress(`write failures: ${writer.stats.failures.join(' | ')}`)
    return rows
  }
}

// How often the daemons' ZooKeeper sessions really expired (and were replaced) so far.
function countSessionReplacements (logFiles: string[]): number {
  let n = 0
  for (const f of logFiles) {
    try { n += fs.readFileSync(f, 'utf8').split('replacing the ZooKeeper session').length - 1 } catch { /* gone */ }
  }
  return n
}

// ---- runner ----------------------------------------------------------------------------------

// SIGSTOP a replica for UKAI_CHAOS_HUNG_MS (60 s) under checksummed writers, then kill -9 one
// with writes in flight and restart it (bench/chaos-replica.ts).
const replicaFaults: ChaosCase = {
  name: 'replica-faults',
  run: async (ctx) => await runReplicaChaos({ log: ctx.progress })
}

// Issue 11's fault cases, each healed with no operator command (bench/chaos-heal.ts).
const healCases: ChaosCase[] = Object.keys(HEAL_CASES).map(name => ({ name, run: async (ctx) => await runHealCase(name, ctx.t, ctx.progress) }))

export const CASES: ChaosCase[] = [zkOutages, replicaFaults, ...healCases]

function table (rows: ChaosRow[]): string {
  const tab = new Table({ head: ['fault', 'written', 'verified', 'lost', 'writes failed', 'longest stall', 'healed', 'notes'], style: { head: [], border: [] } })
  const mib = (n: number): string => `${(n / MIB).toFixed(1)} MiB`
  for (const r of rows) tab.push([r.fault, mib(r.bytesWritten), mib(r.bytesVerified), String(r.bytesLost), String(r.writesFailed), `${r.longestStallMs} ms`, r.healedMs === null ? 'never' : `${r.healedMs} ms`, r.notes ?? ''])
  return tab.toString()
}

async function main (): Promise<void> {
  const wanted = process.argv.slice(2)
  const unknown = wanted.filter(w => !CASES.some(c => c.name === w))
  if (unknown.length > 0) throw new Error(`unknown case ${unknown.join(', ')}; cases: ${CASES.map(c => c.name).join(', ')}`)
  const cases = wanted.length === 0 ? CASES : CASES.filter(c => wanted.includes(c.name))
  const startedAt = new Date()
  const results: Array<{ case: string, rows: ChaosRow[], error?: string, durationMs: number }> = []
  for (const c of cases) {
    const cleanup = new Cleanup()
    const onSignal = (): void => { cleanup.run().finally(() => process.exit(130)) }
    process.once('SIGINT', onSignal)
    const t: TestLike = {
      teardown: (fn) => cleanup.add(c.name, async () => { if (process.env.BENCH_KEEP !== '1') await fn() }),
      comment: (...a) => say(a.join(' '))
    }
    say(`case ${c.name}`)
    const t0 = Date.now()
    try {
      results.push({ case: c.name, rows: await c.run({ t, progress: msg => say(`${c.name}: ${msg}`) }), durationMs: Date.now() - t0 })
    } catch (err) {
      say(`case ${c.name} failed: ${(err as Error).stack ?? String(err)}`)
      results.push({ case: c.name, rows: [], error: String(err), durationMs: Date.now() - t0 })
    } finally {
      await cleanup.run()
      process.removeListener('SIGINT', onSignal)
    }
  }
  const rows = results.flatMap(r => r.rows)
  process.stdout.write(table(rows) + '\n')
  fs.mkdirSync(RESULTS_DIR, { recursive: true })
  const out = path.join(RESULTS_DIR, `chaos-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`)
  fs.writeFileSync(out, JSON.stringify({ startedAt: startedAt.toISOString(), results }, null, 2) + '\n')
  fs.copyFileSync(out, path.join(RESULTS_DIR, 'latest-chaos.json'))
  say(`wrote ${path.relative(process.cwd(), out)} and bench/results/latest-chaos.json`)
  const lost = rows.reduce((n, r) => n + r.bytesLost, 0)
  const failed = results.filter(r => r.error !== undefined).map(r => r.case)
  if (lost > 0 || failed.length > 0) {
    say(`FAIL: ${lost} bytes lost${failed.length > 0 ? `; failed cases: ${failed.join(', ')}` : ''}`)
    process.exitCode = 1
  }
}

if (require.main === module) {
  main().catch((err) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1) })
}
