// Scrub through real processes: a flipped byte nobody reads is found by the nodes' background
// scrub and by `ukai scrub`, which marks the replica stale (disk info shows it and the counts),
// and `--wait` repairs it; `--deep` finds a replica whose bytes and checksums both changed (it
// passes its own check) by comparing replicas, and marks the odd one out. Bad input: an unknown
// disk, no disk named, a disk nobody can read — each a clear error and exit status 1.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { NodeFixture, fuseUnavailable, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { flipByte, versionFiles } from './helpers/node-files'
import { randomBytes, rng } from './helpers/model'
import { until } from './helpers/until'
import { sidecarFor } from '../src/storagenode/page-checksums'

const KiB = 1024
const BLOCK = 256 * KiB
const SIZE = 4 * 1024 * KiB
const skip = fuseUnavailable() ?? missingCli('mount') ?? undefined

interface Info { uuid: string, replicasPerNode: Record<string, { stale: number }>, scrub: { mismatches: number, markedStale: number, mismatchesTotal: number, runs: number } | null }
interface Report { mismatches: number, markedStale: number, diverged: number[], unrepairable: number[], versionsChecked: number, repair?: string }

function blockFile (node: NodeFixture, uuid: string, block: number): string {
  const found = versionFiles(node.dataDir, uuid).filter(f => f.startsWith(`${block}.`))
  if (found.length !== 1) throw new Error(`${node.id}: block ${block} has ${found.length} version files`)
  return path.join(node.dataDir, 'disks', uuid, found[0])
}


t.test('scrub finds rot nobody read, marks it stale, repairs it; --deep finds a replica that differs', { skip }, async (t) => {
  const zk = (await startZk(t)).connectString
  const scrubArgs = ['--scrub-mbps', '100', '--scrub-interval-ms', '2000']
  const nodes = await Promise.all(['a1', 'a2', 'a3'].map(async id => await startNode(t, { zk, id, site: 'site-a', extraArgs: scrubArgs })))
  const [, a2, a3] = nodes
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-auto-repair', '--no-controller'] })
  await cliOk(t, ['disk', 'create', 'vol', '--size', '4M', '--block-size', '256K', '--replicas', '3', '--nodes', 'a1,a2,a3'], zk)
  const file = path.join(agent.mountPoint, 'vol')
  const model = randomBytes(rng(21), SIZE)
  const fh = await fs.promises.open(file, 'r+')
  try {
    for (let off = 0; off < SIZE; off += 128 * KiB) await fh.write(model, off, 128 * KiB, off)
    await fh.sync()
  } finally { await fh.close() }
  const uuid = (await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)).uuid
  t.equal((await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)).scrub, null, 'never scrubbed')

  flipByte(blockFile(a2, uuid, 6), 70_000)
  await until('a2\'s background scrub reports the flipped byte', async () => /does not match its checksum/.test(fs.readFileSync(a2.logFile, 'utf8')), 30_000, 200)
  t.pass('the background scrub found it without any read')

  const first = await cliJson<Report>(['scrub', 'vol'], zk)
  t.equal(first.mismatches, 1, 'ukai scrub: one bad replica')
  t.equal(first.markedStale, 1, 'marked stale')
  let info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
  t.equal(info.replicasPerNode.a2.stale, 1, 'disk info: a2 is stale for the rotten block')
  t.match(info.scrub, { mismatches: 1, markedStale: 1, mismatchesTotal: 1, runs: 1 }, 'disk info --json: the scrub counts')
  t.match((await runCli(['disk', 'info', 'vol'], { zk })).stdout, /scrub\s+\S+: 1 bad, 1 marked stale for repair; 1 bad in 1 run/, 'disk info: the scrub line')

  const waited = JSON.parse((await runCli(['scrub', 'vol', '--wait', '--json'], { zk, timeoutMs: 90_000 })).stdout) as Report
  t.equal(waited.repair, 'done', '--wait repaired it')
  info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
  t.equal(info.replicasPerNode.a2.stale, 0, 'a2 in sync again')
  t.same(fs.readFileSync(blockFile(a2, uuid, 6)), model.subarray(6 * BLOCK, 7 * BLOCK), 'the repaired block file holds the right bytes')

  // Bytes and sums both changed (a lost or misdirected write): a3 passes its own check.
  const f7 = blockFile(a3, uuid, 7)
  flipByte(f7, 1000)
  fs.writeFileSync(f7 + '.crc', sidecarFor(fs.readFileSync(f7)))
  const shallow = JSON.parse((await runCli(['scrub', 'vol', '--json'], { zk })).stdout) as Report
  t.equal(shallow.mismatches, 0, 'without --deep each node finds its own bytes consistent')
  const deep = JSON.parse((await runCli(['scrub', 'vol', '--deep', '--json'], { zk })).stdout) as Report
  t.equal(deep.mismatches, 1, '--deep: the replica that differs from the other two')
  t.equal(deep.markedStale, 1)
  info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)
  t.equal(info.replicasPerNode.a3.stale, 1, 'a3 is stale for it')
  t.equal(info.scrub?.mismatchesTotal, 2, 'totals add up over runs')

  const fhr = await fs.promises.open(file, 'r')
  try {
    const buf = Buffer.alloc(SIZE)
    await fhr.read(buf, 0, SIZE, 0)
    t.same(buf, model, 'the whole disk reads back byte for byte')
  } finally { await fhr.close() }

  // Bad input.
  const unknown = await runCli(['scrub', 'nosuch'], { zk })
  t.not(unknown.code, 0, 'an unknown disk: non-zero exit')
  t.match(unknown.stderr, /nosuch/, 'naming it')
  const neither = await runCli(['scrub'], { zk })
  t.not(neither.code, 0, 'no disk and no --all: non-zero exit')
  t.match(neither.stderr, /disk name or --all/)
  await cliOk(t, ['disk', 'create', 'lonely', '--size', '1M', '--block-size', '256K', '--replicas', '1', '--nodes', 'a3'], zk)
  await a3.stop()
  const nobody = await runCli(['scrub', 'lonely'], { zk })
  t.not(nobody.code, 0, 'a disk nobody can read: non-zero exit')
  t.match(nobody.stderr, /no node holding it could be asked/)
  const all = await runCli(['scrub', '--all', '--json'], { zk })
  t.equal(all.code, 1, '--all: exit 1 when a disk could not be scrubbed')
  t.match(all.stderr, /scrub of lonely failed/, 'naming it')
  t.same((JSON.parse(all.stdout) as { disks: Array<{ disk: string }> }).disks.map(d => d.disk), ['vol'], 'and the other disks are scrubbed')
})
