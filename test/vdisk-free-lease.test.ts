// Issue 13 part 4: a disk open for write on a second host (a live migration's destination:
// QEMU opens the image while the source runs) takes the lease the moment the holder lets it go,
// in the background (src/agent/free-lease.ts), so its first write does not wait for it — and
// never earlier: while the source holds the lease it keeps writing, undisturbed by the
// destination's open and reads (QEMU's open probe). Real ZooKeeper, nodes and FUSE mounts.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { readLease } from '../src/meta/lease'
import { MetaStore } from '../src/meta/store'
import { fuseUnavailable, startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { expireSession } from './helpers/session'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const DISK_MIB = 8

interface Info { leaseHolder: string | null }

t.test('the destination takes a freed lease in the background, never while the source holds it', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--zk-session-timeout-ms', '2000'] })
  const b = await startAgent(t, { zk, host: 'hv-b', site: 'site-a' })
  const holder = async (): Promise<string | null> => (await cliJson<Info>(['disk', 'info', 'vm1'], zk)).leaseHolder
  const logOf = (ag: { logFile: string }): string[] => fs.readFileSync(ag.logFile, 'utf8').split('\n')

  t.equal((await runCli(['disk', 'create', 'vm1', '--size', `${DISK_MIB}M`, '--block-size', '1M'], { zk })).code, 0)
  const model = randomBytes(rng(7), DISK_MIB * MiB)
  const fa = await fs.promises.open(path.join(a.mountPoint, 'vm1'), 'r+')
  t.teardown(async () => { await fa.close().catch(() => undefined) })
  await fa.write(model, 0, model.length, 0)
  t.equal(await holder(), 'hv-a', 'the source holds the lease')

  // The destination opens for write and reads, as an incoming QEMU does.
  const fb = await fs.promises.open(path.join(b.mountPoint, 'vm1'), 'r+')
  t.teardown(async () => { await fb.close().catch(() => undefined) })
  const probe = Buffer.alloc(64 * 1024)
  await fb.read(probe, 0, probe.length, 0)
  t.equal(sha256(probe), sha256(model.subarray(0, probe.length)), "the destination's read sees the source's data")

  await t.test('the source keeps writing while it holds the lease: no early fence', async (t) => {
    const rand = rng(8)
    const endAt = Date.now() + 2500
    let writes = 0
    while (Date.now() < endAt) {
      const len = 4096 * (1 + Math.floor(rand() * 16))
      const off = 4096 * Math.floor(rand() * ((model.length - len) / 4096))
      const data = randomBytes(rand, len)
      await fa.write(data, 0, len, off)  // an EIO (a fenced write) would throw here
      data.copy(model, off)
      writes++
      if (writes % 20 === 0) await fb.read(probe, 0, probe.length, off - off % 4096)  // the destination keeps reading
    }
    await fa.sync()
    t.ok(writes > 20, `${writes} writes on the source, every one acknowledged`)
    t.equal(await holder(), 'hv-a', 'the lease stayed with the source')
    t.notOk(logOf(a).some(l => /fenced|FENCED|hand-over requested/.test(l)), 'the source was neither fenced nor asked to hand over')
    t.notOk(logOf(b).some(l => /lease acquired|asked for hand-over/.test(l)), 'the destination neither took nor asked for the lease')
  })

  await t.test("the source's session expires: its lease znode vanishes but is not free, the source keeps it", async (t) => {
    const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
    t.teardown(() => meta.close())
    // A holder whose session expired may still write under its epoch (ZooKeeper away, issue 9);
    // only a deliberate release frees the lease for the destination.
    await expireSession(t, a, async () => (await readLease(meta, 'vm1')).holder === null)
    await untilValue('the source to re-assert its lease', async () => (await readLease(meta, 'vm1')).holder?.host === 'hv-a' ? true : undefined, 20_000, 100)
    const data = randomBytes(rng(10), 64 * 1024)
    await fa.write(data, 0, data.length, MiB)  // an EIO (fenced by the destination) would throw
    data.copy(model, MiB)
    await fa.sync()
    t.pass('the source wrote on after its session came back')
    t.notOk(logOf(b).some(l => /lease acquired|asked for hand-over/.test(l)), 'the destination did not take the vanished lease')
  })

  await t.test('once the source closes, the destination holds the lease before it writes', async (t) => {
    await fa.close()
    const t0 = Date.now()
    await untilValue('hv-b holds the lease', async () => (await holder()) === 'hv-b' ? true : undefined, 20_000, 50)
    t.comment(`the lease moved to hv-b ${Date.now() - t0} ms after the source closed (hv-b has not written)`)
    t.ok(logOf(b).some(l => l.includes('lease freed elsewhere: taken for the disk open for write here')), 'hv-b says why it took it')
    t.ok(logOf(b).some(l => l.includes('lease ready for writes')), 'and fenced the nodes before any write')
    // The first write on the destination finds the lease ready: nothing to ask, nobody to fence.
    const data = randomBytes(rng(9), 4096)
    const w0 = performance.now()
    await fb.write(data, 0, data.length, 4096)
    const firstWriteMs = performance.now() - w0
    data.copy(model, 4096)
    t.comment(`the destination's first write took ${firstWriteMs.toFixed(1)} ms`)
    t.notOk(logOf(b).some(l => l.includes('asked for hand-over')), 'the first write asked for no hand-over')
    await fb.sync()
    const back = Buffer.alloc(model.length)
    await fb.read(back, 0, back.length, 0)
    t.equal(sha256(back), sha256(model), 'every byte the source and the destination wrote reads back on the destination')
  })
})
