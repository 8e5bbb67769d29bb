// The agent-memory suite (bench/agent-memory.ts) for real, in a short version: 4 disks of 32 MiB
// (one of each fio job) under load for 2 s. What is checked is the suite, not the machine: every
// disk's job moved data without an error, the peak is at least what was sampled and above the
// idle figure, the verdict and exit status follow the peak against the bar (a bar of 1 MiB must
// miss), and nothing is left behind.
import fs from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { MemoryResult } from '../bench/agent-memory'
import { runBenchScript } from './helpers/bench-script'
import { makeTempDir } from './helpers/cluster'

async function runSuite (t: Test, dir: string, goalMiB: number): Promise<{ code: number | null, out: string, result: MemoryResult }> {
  const results = path.join(dir, `results-${goalMiB}`)
  const { code, out } = await runBenchScript(t, 'agent-memory.js', [], { BENCH_RESULTS_DIR: results, MEMORY_DISKS: '4', MEMORY_DISK_MIB: '32', MEMORY_RUNTIME_SEC: '2', MEMORY_SAMPLE_MS: '100', MEMORY_GOAL_MIB: String(goalMiB), TMPDIR: dir })
  const result = JSON.parse(fs.readFileSync(path.join(results, 'latest-memory.json'), 'utf8')) as MemoryResult
  return { code, out, result }
}

t.test('agent-memory: 4 disks under every fio job at once, the peak measured and judged', async (t) => {
  const dir = makeTempDir(t, 'bench-memory')
  const { code, out, result } = await runSuite(t, dir, 4096)
  t.equal(result.kind, 'ukai-agent-memory')
  t.equal(result.disks.length, 4, 'a row per disk')
  t.same(result.disks.map(d => d.mix), ['seq write 1M', 'rand write 4K', 'seq read 1M', 'rand read 4K'], 'every kind of I/O at once')
  for (const d of result.disks) t.ok(d.error === 0 && d.ios > 0 && d.bytes > 0, `${d.name} (${d.mix}): ${d.ios} I/Os, ${d.bytes} bytes, error ${d.error}`)
  const a = result.agent
  t.ok(a.samples > 0, `the agent was sampled (${a.samples} samples)`)
  t.ok(a.kernelPeakRssBytes !== null && a.kernelPeakRssBytes > 0, `the kernel's high-water mark was read (${a.kernelPeakRssBytes})`)
  t.equal(a.peakRssBytes, Math.max(a.kernelPeakRssBytes ?? 0, a.sampledMaxRssBytes), 'the peak is the larger of the high-water mark and the samples')
  t.ok(a.idleRssBytes !== null && a.peakRssBytes !== null && a.peakRssBytes >= a.idleRssBytes, 'and at least the idle figure')
  t.same(Object.keys(result.nodes).sort(), ['a1', 'a2'], 'both nodes\' peaks reported')
  t.equal(result.goal.verdict, 'PASS', `4 GiB is a bar the agent stays under: ${result.goal.reason}`)
  t.equal(code, 0, `exit 0 when the goal is met:\n${out.slice(-1500)}`)
  t.match(out, /goal PASS mount agent's peak RSS with 4 disks open under load ≤ 4096 MiB/, 'the goal line says what was judged')

  const low = await runSuite(t, dir, 1)
  t.equal(low.result.goal.verdict, 'MISS', 'a 1 MiB bar is missed')
  t.equal(low.code, 1, 'and the suite exits 1')
  t.equal(fs.readdirSync(dir).filter(d => d.startsWith('ukai-memory-')).length, 0, 'the suite removed its work dirs')
})
