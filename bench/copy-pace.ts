// What the copy pace (src/relocate/copy-pace.ts) buys the guests: a repair of a disk whose
// replica on a2 missed every write runs unlimited (`ukai disk repair`, no --rate, as the
// controller's do by default) while a guest writes 4 KiB pieces one at a time through the mount;
// the guest's write latency during the repair and the repair's duration, with the pacing off
// (`config set copy-pace-rise-ms 0`) and on (the default 10 ms). Real processes on this host:
// ZooKeeper, two storage nodes, one agent (round trips every 1 s).
//   node dist/bench/copy-pace.js [--disk-mib 256] [--rounds 1]
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { startAgent, startNode, startZk, type TestLike } from '../test/helpers/cluster'
import { cliJson, runCli } from '../test/helpers/cli'

const MiB = 1024 * 1024

function arg (name: string, dflt: number): number {
  const i = process.argv.indexOf(name)
  return i >= 0 ? Number(process.argv[i + 1]) : dflt
}

function quantile (xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

async function must (zk: string, args: string[]): Promise<string> {
  const r = await runCli(args, { zk, timeoutMs: 600_000 })
  if (r.code !== 0) throw new Error(`ukai ${args.join(' ')}: ${r.stderr}${r.stdout.slice(-300)}`)
  return r.stdout
}

interface Row { mode: string, idleP50: number, idleP99: number, p50: number, p99: number, max: number, writes: number, repairSec: number, pacedTo: string }

async function round (mode: 'off' | 'on', diskMib: number): Promise<Row> {
  const cleanups: Array<() => unknown> = []
  const t: TestLike = { teardown: (fn) => { cleanups.push(fn) }, comment: (...a) => { console.error(...a) } }
  try {
    const zk = await startZk(t)
    const zks = zk.connectString
    await startNode(t, { zk, id: 'a1', site: 'site-a' })
    const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
    const agent = await startAgent(t, { zk, host: 'hv1', site: 'site-a', extraArgs: ['--no-controller', '--no-auto-repair', '--rtt-interval-ms', '1000'] })
    await must(zks, ['config', 'set', 'copy-pace-rise-ms', mode === 'off' ? '0' : '10'])
    await must(zks, ['disk', 'create', 'vol', '--size', `${diskMib}M`, '--block-size', '4M', '--nodes', 'a1,a2'])
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
    cleanups.push(async () => await fh.close().catch(() => {}))
    await a2.stop()
    const piece = crypto.randomBytes(MiB)
    for (let off = 0; off < diskMib * MiB; off += MiB) await fh.write(piece, 0, MiB, off)
    await fh.sync()
    await a2.restart()
    for (;;) {
      const nodes = await cliJson<Array<{ id: string, alive: unknown }>>(['node', 'list'], zks)
      if (nodes.find(n => n.id === 'a2')?.alive != null) break
      await sleep(250)
    }
    // The guest: 4 KiB writes one after another, each timed.
    const lat: Array<{ atMs: number, ms: number }> = []
    let writing = true
    const data = crypto.randomBytes(4096)
    const writer = (async () => {
      let i = 0
      while (writing) {
        const off = 4096 * ((i++ * 7919) % (diskMib * 256))
        const t0 = performance.now()
        await fh.write(data, 0, 4096, off)
        lat.push({ atMs: Date.now(), ms: performance.now() - t0 })
      }
    })()
    await sleep(4000)  // idle: what the guest sees without a repair (and the agent's idle p99)
    const idle = lat.map(l => l.ms)
    const startMs = Date.now()
    let pacedTo = '-'
    const repair = must(zks, ['disk', 'repair', 'vol'])
    const watch = (async () => {
      for (;;) {
        const st = await cliJson<Array<{ state: string, pace?: { bytesPerSec: number, why: string } }>>(['relocate', 'status', 'vol'], zks).catch(() => [])
        if (st[0]?.pace !== undefined && pacedTo === '-') pacedTo = `${(st[0].pace.bytesPerSec / 1e6).toFixed(1)} MB/s (${st[0].pace.why})`
        if (st[0] !== undefined && st[0].state !== 'copying' && st[0].state !== 'flipping') return
        await sleep(500)
      }
    })()
    await repair
    const endMs = Date.now()
    await watch
    writing = false
    await writer
    const during = lat.filter(l => l.atMs > startMs && l.atMs <= endMs).map(l => l.ms)
    return { mode, idleP50: quantile(idle, 0.5), idleP99: quantile(idle, 0.99), p50: quantile(during, 0.5), p99: quantile(during, 0.99), max: Math.max(...during), writes: during.length, repairSec: (endMs - startMs) / 1000, pacedTo }
  } finally {
    for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch((err) => console.error(String(err)))
  }
}

async function main (): Promise<void> {
  const diskMib = arg('--disk-mib', 256)
  const rounds = arg('--rounds', 1)
  const rows: Row[] = []
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['off', 'on'] as const) {
      const row = await round(mode, diskMib)
      rows.push(row)
      console.log(JSON.stringify(row))
    }
  }
  const f = (x: number): string => x.toFixed(1)
  console.log('\npacing | guest 4K write idle p50/p99 ms | during repair p50/p99/max ms | writes | repair s | slowed to')
  for (const r of rows) console.log(`${r.mode.padEnd(6)} | ${f(r.idleP50)} / ${f(r.idleP99)} | ${f(r.p50)} / ${f(r.p99)} / ${f(r.max)} | ${r.writes} | ${f(r.repairSec)} | ${r.pacedTo}`)
}

main().catch((err) => { console.error(err); process.exitCode = 1 })
