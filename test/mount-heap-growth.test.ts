// The mount agent's fixed heap growth (issue 13, src/lib/gc-ballast.ts): `capHeapGrowth` set at
// run time bounds the old generation of a process that holds the ballast and promotes garbage the
// way requests waiting under load do; `ukai mount` applies it by default (its ready line says
// which percentage), takes `--heap-growing-percent N` and refuses bad values before it starts.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { HEAP_GROWING_PERCENT_AGENT_DEFAULT, capHeapGrowth } from '../src/lib/gc-ballast'
import { repoRoot } from '../src/dev/processes'
import { fuseUnavailable, startAgent, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'

const MIB = 1024 * 1024

// A child holding the ballast (from dist/, as the daemons run) allocates 4 M small objects kept in
// a ring of 100 k: each outlives a few scavenges, is promoted, then dies in the old generation.
// Returns the peak of the heap's used size.
async function peakUsedBytes (percent: number | null): Promise<number> {
  const lib = path.join(repoRoot(), 'dist', 'src', 'lib', 'gc-ballast.js')
  const script = `
    const v8 = require('node:v8')
    const g = require(${JSON.stringify(lib)})
    g.holdGcBallast()
    ${percent === null ? '' : `g.capHeapGrowth(${percent})`}
    const ring = new Array(100000)
    let peak = 0
    for (let i = 0; i < 4e6; i++) {
      ring[i % ring.length] = { a: [i, i + 1, i + 2, i + 3], s: 'x' + i }
      if (i % 2000 === 0) peak = Math.max(peak, v8.getHeapStatistics().used_heap_size)
    }
    process.stdout.write(String(peak))`
  return await new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { env: { PATH: process.env.PATH } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(Number(stdout))
    })
  })
}

t.test('capHeapGrowth bounds the old generation of a process that promotes garbage', async (t) => {
  const own = await peakUsedBytes(null)
  const fixed = await peakUsedBytes(HEAP_GROWING_PERCENT_AGENT_DEFAULT)
  t.comment(`peak heap used: V8's own factor ${(own / MIB).toFixed(0)} MiB, fixed at ${HEAP_GROWING_PERCENT_AGENT_DEFAULT} % ${(fixed / MIB).toFixed(0)} MiB`)
  // Live: the 16 MiB ballast, ~20 MiB of ring, the runtime's own. Measured: 111 fixed, 180-188 not.
  t.ok(fixed < 140 * MIB, `fixed: about live × 2 + the young generation (${(fixed / MIB).toFixed(0)} MiB)`)
  t.ok(fixed < 0.8 * own, `well under V8's own factor (${(fixed / MIB).toFixed(0)} vs ${(own / MIB).toFixed(0)} MiB)`)
  t.throws(() => capHeapGrowth(-1), RangeError, 'a negative percentage is refused')
  t.throws(() => capHeapGrowth(2.5), RangeError, 'so is a fraction')
})

t.test('bad --heap-growing-percent values are refused', async (t) => {
  for (const value of ['-1', 'lots', '2.5', '5000']) {
    const res = await runCli(['mount', '/nonexistent-mnt', '--site', 'site-a', '--heap-growing-percent', value])
    t.equal(res.code, 2, `--heap-growing-percent ${value}: exit 2`)
    t.match(res.stderr, /bad --heap-growing-percent/, `--heap-growing-percent ${value}: the message names the flag`)
  }
  const help = await runCli(['mount', '--help'])
  t.match(help.stdout, /--heap-growing-percent <n>/, 'listed in ukai mount --help')
})

t.test('the agent fixes its heap growth by default, whoever starts it', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  const ready = fs.readFileSync(agent.logFile, 'utf8').split('\n').find(l => l.includes('"msg":"ready"'))
  t.ok(ready !== undefined, 'the agent logged its ready line')
  t.match(ready, new RegExp(`"heapGrowingPercent":${HEAP_GROWING_PERCENT_AGENT_DEFAULT}[,}]`), `the ready line says ${HEAP_GROWING_PERCENT_AGENT_DEFAULT} %`)
})
