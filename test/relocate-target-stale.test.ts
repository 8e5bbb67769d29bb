// A repair whose target misses guest writes while it copies: the target's replicas of those
// blocks are marked stale mid-run, and the next round must copy them again. Before the fix the
// executor pulled only to targets still `syncing`, so a block whose target had gone stale was
// "copied" to nobody every round and the repair paused ("blocks keep falling out of sync on the
// targets"; CI, session 9). Real processes: a2 (the target) answers guest writes 11 s late for a
// few seconds (the node's write-delay fault), past the agent's 10 s call deadline, so those
// writes fail on a2 and mark it stale; the repair must still finish, every byte equal.
import fs from 'node:fs'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { fuseUnavailable, processZkAuth } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { a2SlowRepairSetup, checkRepairedOnA2, sampleRelocation, startGuestWriter } from './helpers/copy-pace'
import { until } from './helpers/until'

const MiB = 1024 * 1024
const DISK_BYTES = 16 * MiB
const BLOCK_BYTES = 256 * 1024

t.test('a target that goes stale mid-repair is copied to again: the repair finishes', { skip: fuseUnavailable() ?? false }, async (t) => {
  const { zk: zkc, faultFile, a1, a2, file, fh, model } = await a2SlowRepairSetup(t, { name: 'st', bytes: DISK_BYTES })

  const meta = await MetaStore.connect(zkc, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  const writer = startGuestWriter(fh, model)
  // 0.5 MB/s: 16 MiB take ~34 s: the fault lands mid-copy, the writes it failed (each after the
  // 10 s deadline) are all over well before the last round, which copies their blocks again.
  const repair = runCli(['disk', 'repair', 'st', '--rate', '0.5'], { zk: zkc, timeoutMs: 150_000 })
  const sampler = sampleRelocation(meta, 'st')
  let staleSeen = 0
  try {
    await until('the repair copies', async () => sampler.samples.length > 0 && sampler.samples[sampler.samples.length - 1].bytes > 0, 20_000, 100)
    fs.writeFileSync(faultFile, '11000')  // past the 10 s call deadline: a2's writes fail, a2 goes stale
    await until('a2 is marked stale for some block mid-repair', async () => {
      const info = await cliJson<{ replicasPerNode: Record<string, { stale?: number }> }>(['disk', 'info', 'st'], zkc)
      staleSeen = info.replicasPerNode.a2?.stale ?? 0
      return staleSeen > 0
    }, 40_000, 250)
  } finally {
    fs.writeFileSync(faultFile, '0')
    await writer.stop()
  }
  t.ok(staleSeen > 0, `a2 went stale for ${staleSeen} blocks while the repair ran`)
  const end = await repair
  await sampler.stop()
  t.equal(end.code, 0, `the repair finishes${end.code !== 0 ? `: ${end.stdout.slice(-300)}${end.stderr}` : ''}`)
  t.match(end.stdout, /repair of st: done/)

  await checkRepairedOnA2(t, { zk: zkc, meta, name: 'st', file, fh, model, a1, a2, blockBytes: BLOCK_BYTES })
})
