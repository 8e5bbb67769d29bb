// Issue 11 part 2: a running repair yields to the guests (src/relocate/copy-pace.ts). A disk on
// a1,a2 misses writes on a2 while a2 is stopped; a2 comes back and `ukai disk repair` copies the
// stale blocks at 4 MB/s while a guest keeps writing through the mount. Then a1 — the source of
// every copy and a replica of every guest write — answers writes 80 ms late (the node's write
// delay fault: the copies themselves are not slowed by it), and the copy must slow down (the
// progress in ZooKeeper), say why (`relocate status`), speed up again once the fault is gone, and
// finish with every byte equal on both replicas and through the mount. Bad settings are refused
// with nothing changed.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { FAULT_WRITE_DELAY_MS_FILE_ENV } from '../src/storagenode/write-delay-fault'
import { fuseUnavailable, makeTempDir, processZkAuth, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { diskMissedByA2, newestVersions, rateBetween, sampleRelocation, sha, startGuestWriter } from './helpers/copy-pace'
import { until } from './helpers/until'

const MiB = 1024 * 1024
const DISK_BYTES = 40 * MiB
const BLOCK_BYTES = 256 * 1024
const BLOCKS = DISK_BYTES / BLOCK_BYTES
const RATE_MB = 4            // --rate of the repair, MB/s
const FAULT_MS = 80          // a1's write delay while the fault is on
const FLOOR = '256K'

t.test('a running repair slows while a node it uses is slow for the guests, and speeds up again', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zkc = zk.connectString
  const faultFile = path.join(makeTempDir(t, 'fault'), 'a1-write-delay-ms')
  process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] = faultFile
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  delete process.env[FAULT_WRITE_DELAY_MS_FILE_ENV]
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
  // No controller (its automatic repair would race the one started here); reports every second.
  const agent = await startAgent(t, { zk, host: 'hv1', site: 'site-a', extraArgs: ['--no-controller', '--no-auto-repair', '--rtt-interval-ms', '1000'] })

  t.test('absurd pace settings are refused, nothing changed', async (t) => {
    const before = await cliJson<unknown>(['config', 'show'], zkc)
    await Promise.all(([
      ['copy-pace-rise-ms', '-5', /bad copy-pace-rise-ms '-5': expected a whole number of milliseconds/],
      ['copy-pace-rise-ms', '99999999', /at most 10000/],
      ['copy-pace-rise-ms', 'fast', /expected a whole number/],
      ['copy-pace-floor-bytes-per-sec', '0', /at least 65536 \(64K\); a slowed copy must still finish/],
      ['copy-pace-floor-bytes-per-sec', '1P', /at most/],
      ['copy-pace-floor-bytes-per-sec', 'lots', /bad copy-pace-floor-bytes-per-sec 'lots'/]
    ] as const).map(async ([key, value, why]) => {
      const r = await runCli(['config', 'set', key, value], { zk: zkc })
      t.not(r.code, 0, `config set ${key} ${value} fails`)
      t.match(r.stderr, why, `and says why: ${r.stderr.trim()}`)
    }))
    t.same(await cliJson<unknown>(['config', 'show'], zkc), before, 'the settings are as before')
    const ok = await runCli(['config', 'set', 'copy-pace-floor-bytes-per-sec', FLOOR], { zk: zkc })
    t.equal(ok.code, 0, `a sane floor is taken: ${ok.stdout.trim()}${ok.stderr}`)
    // Above this shared 2-core machine's own swings of a second's p99 (20-40 ms seen with a
    // repair running and no fault), well below the fault's 80 ms.
    t.equal((await runCli(['config', 'set', 'copy-pace-rise-ms', '40'], { zk: zkc })).code, 0, 'a sane rise is taken')
    t.equal((await cliJson<{ value: number }>(['config', 'get', 'copy-pace-floor-bytes-per-sec'], zkc)).value, 256 * 1024)
    const shown = await runCli(['config', 'show'], { zk: zkc })
    t.match(shown.stdout, /copy-pace-rise-ms +│ 40 +│ yes/, 'config show lists the rise')
    t.match(shown.stdout, /copy-pace-floor-bytes-per-sec │ 262144 +│ yes/, 'and the floor, its name whole')
  })

  t.test('slowed while a1 is slow, back up after, every byte equal', async (t) => {
    // a2 misses all of it: every block is stale there.
    const { file, fh, model } = await diskMissedByA2(t, { zk: zkc, mountPoint: agent.mountPoint, name: 'pace', bytes: DISK_BYTES, a2, restartA2: async () => await a2.restart() })

    // The guest keeps writing (4-64 KiB, one at a time, every 20 ms): the signal the pace reads.
    const writer = startGuestWriter(fh, model)
    const { latencies } = writer

    const meta = await MetaStore.connect(zkc, { auth: processZkAuth() })
    t.teardown(() => meta.close())
    const repair = runCli(['disk', 'repair', 'pace', '--rate', String(RATE_MB)], { zk: zkc, timeoutMs: 120_000 })
    const sampler = sampleRelocation(meta, 'pace')
    const { samples } = sampler
    try {
      await until('the repair copies', async () => samples.length > 0 && samples[samples.length - 1].bytes > 0, 20_000, 100)
      const startMs = Date.now()
      await new Promise(resolve => setTimeout(resolve, 3000))
      const before = rateBetween(samples, startMs, Date.now())
      t.ok(before > RATE_MB * 1e6 * 0.5 && before < RATE_MB * 1e6 * 1.3, `at its rate before: ${(before / 1e6).toFixed(2)} MB/s`)

      fs.writeFileSync(faultFile, String(FAULT_MS))
      const faultOnMs = Date.now()
      await until('the repair says it slowed for a1', async () => {
        const last = samples[samples.length - 1]
        return last.atMs > faultOnMs && last.rec.pace !== undefined && /^node a1 write p99/.test(last.rec.pace.why)
      }, 10_000, 100)
      const status = await runCli(['relocate', 'status', 'pace'], { zk: zkc })
      t.match(status.stdout, /│ slowed to [\d.]+ MB\/s +│/, 'relocate status: slowed, in REASON')
      t.match(status.stdout, /^pace: slowed to [\d.]+ MB\/s: node a1 write p99 \d+ ms \(idle [\d.]+ ms, seen from hv1\)$/m, `and why, under the table: ${status.stdout.split('\n').find(l => l.startsWith('pace:')) ?? ''}`)
      t.ok(status.stdout.split('\n').every(l => l.length <= 132), 'every line within 132 columns')
      const slowedAtMs = Date.now()
      await new Promise(resolve => setTimeout(resolve, 5000))
      const slow = rateBetween(samples, slowedAtMs + 2000, Date.now())
      const faultOffMs = Date.now()
      fs.writeFileSync(faultFile, '0')
      t.ok(slow < before / 3, `slowed: ${(slow / 1e6).toFixed(2)} MB/s while a1 was slow, ${(before / 1e6).toFixed(2)} before (${(before / slow).toFixed(1)}×)`)
      const paces = samples.map(x => x.rec.pace?.bytesPerSec).filter((p): p is number => p !== undefined)
      t.equal(Math.min(...paces), 256 * 1024, `never below the floor of ${FLOOR}/s (the pace; the copy moved ${(slow / 1e6).toFixed(2)} MB/s)`)

      // Added back an eighth of the rate per report (one a second here) unless a node is over
      // the threshold again (a hold; this 2-core machine shows those): within 20 s the pace is four times the floor, or lifted.
      const slowestPace = Math.min(...samples.filter(x => x.rec.pace !== undefined).map(x => x.rec.pace?.bytesPerSec ?? Infinity))
      await until('the pace rises again', async () => {
        const last = samples[samples.length - 1]
        return last.atMs > faultOffMs && (last.rec.pace === undefined || last.rec.pace.bytesPerSec >= slowestPace * 4)
      }, 20_000, 100)
      const risenAtMs = Date.now()
      t.pass(`the pace rose again ${((risenAtMs - faultOffMs) / 1000).toFixed(1)} s after a1 was fine`)
      await new Promise(resolve => setTimeout(resolve, 2500))
      const after = rateBetween(samples, risenAtMs, Date.now())
      t.ok(after > slow * 2, `faster again: ${(after / 1e6).toFixed(2)} MB/s (${(after / slow).toFixed(1)}× the slowed rate)`)
      t.ok(after < RATE_MB * 1e6 * 1.3, `never above its --rate: ${(after / 1e6).toFixed(2)} MB/s`)

      // The pace as the record showed it, for the log.
      let shown = ''
      for (const x of samples) {
        const now = x.rec.pace === undefined ? 'at its rate' : `${(x.rec.pace.bytesPerSec / 1e6).toFixed(2)} MB/s: ${x.rec.pace.why}`
        if (now !== shown) t.comment(`+${((x.atMs - startMs) / 1000).toFixed(1)} s ${now}`)
        shown = now
      }
      t.comment(`fault on at +${((faultOnMs - startMs) / 1000).toFixed(1)} s, off at +${((faultOffMs - startMs) / 1000).toFixed(1)} s`)
      const during = latencies.filter(l => l.atMs > faultOnMs + 500 && l.atMs < faultOffMs).map(l => l.ms)
      t.comment(`guest writes while a1 was slow: ${during.length}, median ${during.sort((a, b) => a - b)[Math.floor(during.length / 2)]?.toFixed(1)} ms`)
    } finally {
      await writer.stop()
    }
    const end = await repair
    await sampler.stop()
    t.equal(end.code, 0, `the repair finishes${end.code !== 0 ? `: ${end.stdout.slice(-300)}${end.stderr}` : ''}`)
    t.match(end.stdout, /repair of pace: done/)
    const rec = await meta.getRelocation('pace')
    t.equal(rec?.pace, undefined, 'no pace left on the finished record')

    await fh.sync()
    t.equal(sha(await fs.promises.readFile(file)), sha(model), 'the mount reads what the guest wrote')
    const uuid = (await meta.getDisk('pace')).uuid
    const info = await cliJson<{ replicasPerNode: Record<string, { inSync: number }> }>(['disk', 'info', 'pace'], zkc)
    t.equal(info.replicasPerNode.a1.inSync, BLOCKS, 'a1 in sync for every block')
    t.equal(info.replicasPerNode.a2.inSync, BLOCKS, 'a2 in sync for every block')
    // Every block's newest version, byte for byte, on both nodes.
    const on1 = newestVersions(a1.dataDir, uuid)
    const on2 = newestVersions(a2.dataDir, uuid)
    t.equal(on1.size, BLOCKS, `a1 holds ${BLOCKS} blocks`)
    t.same([...on2].sort(), [...on1].sort(), 'a2 holds the same bytes as a1 for every block')
    for (let b = 0; b < BLOCKS; b++) {
      const want = sha(model.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES))
      if (on1.get(String(b)) !== want) { t.fail(`block ${b} on a1 differs from the model`); break }
    }
  })
})
