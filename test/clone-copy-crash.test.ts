// Issue 9: a clone's copy-on-write pulled from another node (CopyBase) is atomic. The clone lives
// on site-b, its parent on site-a; the first write of the clone's block makes b1 pull the parent's
// 16 MiB version through a bandwidth-capped link (a WAN proxy as b1's --peer-address for a1), and
// b1 is killed (-9) part-way. Before the fix the partial copy was already the clone's version:
// after the restart it was taken as present and read instead of the parent (zeros where the copy
// had not reached). Now the copy is a temporary file until it is complete and durable: after the
// crash no version exists, the restarted node removes the temporary, the write (waiting for b1)
// copies again, and the block reads as the parent's bytes plus the write, byte for byte.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { startWanProxy } from './helpers/wan'
import { untilValue } from './helpers/until'

const KiB = 1024
const MiB = 1024 * KiB
const BLOCK_BYTES = 16 * MiB
// 32 Mbit/s: the 16 MiB copy takes ~4 s, so a poll every 20 ms sees it part-way.
const LINK_MBPS = 32
const PATCH_OFFSET = 5 * MiB
const PATCH_BYTES = 64 * KiB
// The write waits for the restarted node (generous on the shared 2 cores).
const IO_RETRY_MS = 60_000

interface Disk { name: string, uuid: string }

t.test('a peer CopyBase killed mid-copy leaves no partial version', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const link = await startWanProxy(t, { target: a1.address, delayMs: 1, mbps: LINK_MBPS })
  const b1 = await startNode(t, { zk, id: 'b1', site: 'site-b', extraArgs: ['--peer-address', `a1=${link.address}`] })
  const agent = await startAgent(t, { zk, host: 'hv-b', site: 'site-b', extraArgs: ['--io-retry-ms', String(IO_RETRY_MS)] })
  const ok = async (args: string[]): Promise<string> => await cliOk(t, args, zks, 60_000)

  await ok(['disk', 'create', 'gold', '--size', '16M', '--block-size', '16M', '--replicas', '1', '--site', 'site-a'])
  const base = randomBytes(rng(17), BLOCK_BYTES)
  const gold = await fs.promises.open(path.join(agent.mountPoint, 'gold'), 'r+')
  try { await gold.write(base, 0, base.length, 0); await gold.sync() } finally { await gold.close() }
  await ok(['snapshot', 'create', 'gold@base'])
  await ok(['clone', 'gold@base', 'vm', '--site', 'site-b'])
  const uuid = (await cliJson<Disk[]>(['disk', 'list'], zks)).find(d => d.name === 'vm')?.uuid as string
  const dir = path.join(b1.dataDir, 'disks', uuid)
  const entries = (): Array<{ name: string, size: number }> => {
    if (!fs.existsSync(dir)) return []
    return fs.readdirSync(dir).flatMap(name => {
      try { return [{ name, size: fs.statSync(path.join(dir, name)).size }] } catch { return [] }
    })
  }
  const isVersion = (name: string): boolean => /^\d+\.\d+$/.test(name)

  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vm'), 'r+')
  t.teardown(async () => await fh.close().catch(() => {}))
  const patch = randomBytes(rng(18), PATCH_BYTES)
  const startedMs = Date.now()
  const writing = fh.write(patch, 0, patch.length, PATCH_OFFSET).then(() => true, (err) => { t.comment(`the write failed: ${String(err)}`); return false })

  const partial = await untilValue('b1 to be part-way through the copy', async () => {
    return entries().find(e => e.size >= 2 * MiB && e.size < BLOCK_BYTES)
  }, 60_000, 20)
  await b1.kill('SIGKILL')
  const afterKill = entries()
  t.comment(`killed b1 with ${(partial.size / MiB).toFixed(0)} of 16 MiB copied; left: ${afterKill.map(e => `${e.name} (${e.size})`).join(', ')}`)
  t.same(afterKill.filter(e => isVersion(e.name)), [], 'killed mid-copy: the clone has no version of the block on b1, only a temporary')
  t.ok(afterKill.some(e => e.name.endsWith('.tmp')), 'the partial copy is a temporary file')

  await b1.restart()
  const acked = await writing
  t.comment(`measured: the write took ${Date.now() - startedMs} ms across the crash and restart`)
  t.ok(acked, 'the write waited for b1 to return and was acknowledged')
  const left = entries()
  t.same(left.filter(e => e.name.endsWith('.tmp')).map(e => e.name), [], 'no temporary files remain on b1')
  t.same(left.filter(e => isVersion(e.name)).map(e => e.name), ['0.1'], 'the clone\'s block has its one version')

  const got = Buffer.alloc(BLOCK_BYTES)
  await fh.read(got, 0, got.length, 0)
  const expected = Buffer.from(base)
  if (acked) patch.copy(expected, PATCH_OFFSET)
  t.equal(sha256(got.subarray(0, PATCH_OFFSET)), sha256(base.subarray(0, PATCH_OFFSET)), 'before the write: the parent\'s bytes')
  t.equal(sha256(got.subarray(PATCH_OFFSET + PATCH_BYTES)), sha256(base.subarray(PATCH_OFFSET + PATCH_BYTES)), 'after the write: the parent\'s bytes (never the zeros of a cut copy)')
  t.equal(sha256(got), sha256(expected), 'the whole block: the parent\'s bytes with the acknowledged write')
  const goldNow = await fs.promises.readFile(path.join(agent.mountPoint, 'gold'))
  t.equal(sha256(goldNow), sha256(base), 'the parent is untouched')
})
