// A repair whose target misses guest writes while it copies: the target's replicas of those
// blocks are marked stale mid-run, and the next round must copy them again. Before the fix the
// executor pulled only to targets still `syncing`, so a block whose target had gone stale was
// "copied" to nobody every round and the repair paused ("blocks keep falling out of sync on the
// targets"; CI, session 9). Real processes: a2 (the target) answers guest writes 11 s late for a
// few seconds (the node's write-delay fault), past the agent's 10 s call deadline, so those
// writes fail on a2 and mark it stale; the repair must still finish, every byte equal.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { FAULT_WRITE_DELAY_MS_FILE_ENV } from '../src/storagenode/write-delay-fault'
import { fuseUnavailable, makeTempDir, processZkAuth, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { diskMissedByA2, newestVersions, sampleRelocation, sha, startGuestWriter } from './helpers/copy-pace'
import { until } from './helpers/until'

const MiB = 1024 * 1024
const DISK_BYTES = 16 * MiB
const BLOCK_BYTES = 256 * 1024
const BLOCKS = DISK_BYTES / BLOCK_BYTES

t.test('a target that goes stale mid-repair is copied to again: the repair finishes', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zkc = zk.connectString
  const faultFile = path.join(makeTempDir(t, 'fault'), 'a2-write-delay-ms')
  // a2's process, also after its restart, runs with the write-delay fault armed (off while 0).
  const withFault = async <T>(fn: () => Promise<T>): Promise<T> => {
    process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] = faultFile
    try { return await fn() } finally { delete process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] }
  }
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await withFault(async () => await startNode(t, { zk, id: 'a2', site: 'site-a' }))
  const agent = await startAgent(t, { zk, host: 'hv1', site: 'site-a', extraArgs: ['--no-controller', '--no-auto-repair'] })

  // a2 misses all of it: every block is stale there.
  const { file, fh, model } = await diskMissedByA2(t, { zk: zkc, mountPoint: agent.mountPoint, name: 'st', bytes: DISK_BYTES, a2, restartA2: async () => await withFault(async () => { await a2.restart() }) })

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

  await fh.sync()
  t.equal(sha(await fs.promises.readFile(file)), sha(model), 'the mount reads what the guest wrote')
  const info = await cliJson<{ replicasPerNode: Record<string, { inSync: number }> }>(['disk', 'info', 'st'], zkc)
  t.equal(info.replicasPerNode.a2.inSync, BLOCKS, 'a2 in sync for every block')
  const uuid = (await meta.getDisk('st')).uuid
  const on1 = newestVersions(a1.dataDir, uuid)
  const on2 = newestVersions(a2.dataDir, uuid)
  t.same([...on2].sort(), [...on1].sort(), 'a2 holds the same bytes as a1 for every block')
  for (let b = 0; b < BLOCKS; b++) {
    if (on1.get(String(b)) !== sha(model.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES))) { t.fail(`block ${b} on a1 differs from the model`); break }
  }
})
