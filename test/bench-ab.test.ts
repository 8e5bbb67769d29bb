// The A/B cost suite (bench/ab-cost.ts) for real, in a short version: the TLS comparison's two
// clusters (mutual TLS, and --insecure), one round of the four fio jobs for a second each on a
// 64 MiB disk. What is checked is the suite, not the machine's speed: every job measured on both
// sides, the per-round and median ratios agree with the figures they come from, the verdict with
// the goal's bar, the exit status with the verdict; nothing left behind.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { TLS_GOAL } from '../bench/goals'
import { WORKLOADS } from '../bench/jobs'
import { runBenchScript } from './helpers/bench-script'
import { makeTempDir } from './helpers/cluster'

interface Row { workload: string, on: Array<number | null>, off: Array<number | null>, perRound: Array<number | null>, medianOn: number | null, medianOff: number | null, ratio: number | null }
interface Result { kind: string, rows: Row[], goal: { id: string, verdict: string }, settings: { rounds: number } }

t.test('ab-cost tls: one short round, both sides measured, the verdict follows the ratios', async (t) => {
  const dir = makeTempDir(t, 'bench-ab')
  const results = path.join(dir, 'results')
  const { code, out } = await runBenchScript(t, 'ab-cost.js', ['tls'], { BENCH_RESULTS_DIR: results, BENCH_AB_ROUNDS: '1', BENCH_AB_FILE_MIB: '64', BENCH_RUNTIME_SEC: '1', BENCH_RAMP_SEC: '1', BENCH_NUMJOBS: '2', TMPDIR: dir })
  t.ok(code === 0 || code === 1, `exit 0 (goal met) or 1 (missed), got ${code}:\n${out.slice(-2000)}`)
  t.match(out, /mutual TLS on vs --insecure: 1 interleaved rounds/, 'the title says what is compared')

  const latest = JSON.parse(fs.readFileSync(path.join(results, 'latest-tls.json'), 'utf8')) as Result
  t.equal(latest.kind, 'ukai-ab-tls')
  t.equal(latest.settings.rounds, 1)
  t.same(latest.rows.map(r => r.workload), WORKLOADS.map(w => w.id), 'a row per fio job')
  for (const r of latest.rows) {
    t.ok(typeof r.on[0] === 'number' && r.on[0] > 0 && typeof r.off[0] === 'number' && r.off[0] > 0, `${r.workload}: measured on both sides (${r.on[0]} / ${r.off[0]})`)
    t.equal(r.medianOn, r.on[0], `${r.workload}: the median of one round is that round`)
    const expected = Math.round((r.on[0] as number) / (r.off[0] as number) * 1000) / 1000
    t.equal(r.ratio, expected, `${r.workload}: ratio = on / off`)
    t.equal(r.perRound[0], expected, `${r.workload}: the round's own ratio`)
  }
  const met = latest.rows.every(r => (r.ratio ?? 0) >= TLS_GOAL.min)
  t.equal(latest.goal.id, 'tls-cost')
  t.equal(latest.goal.verdict, met ? 'PASS' : 'MISS', 'the verdict follows the ratios against the goal\'s bar')
  t.equal(code, met ? 0 : 1, 'and so does the exit status')

  const sides = fs.readdirSync(dir).filter(d => d.startsWith('ukai-ab-tls-'))
  t.equal(sides.length, 0, 'the suite removed its work dir')
})
