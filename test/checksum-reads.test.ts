// End-to-end checksums through real processes: a byte flipped in a block file on one node is
// never served — the read returns the model's bytes from the other replica, over gRPC and
// through a short-circuit read — and the rotten replica is marked stale (disk info), then
// repaired; the same under a 512 KiB short-circuit read (summed in the thread pool). Checksums
// survive a node restart; a 512-byte write inside a page keeps them right.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { AgentFixture, NodeFixture, TestLike, fuseUnavailable, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { flipByte, versionFiles } from './helpers/node-files'
import { until } from './helpers/until'
import { sidecarFor } from '../src/storagenode/page-checksums'

const KiB = 1024
const MiB = 1024 * KiB
const BLOCK = 256 * KiB
const SIZE = 4 * MiB
const skip = fuseUnavailable() ?? missingCli('mount') ?? undefined

interface Info { uuid: string, replicasPerNode: Record<string, { inSync: number, stale: number }> }

async function setup (t: TestLike & Parameters<typeof cliOk>[0], nodeHost: string | null, blockSize = '256K'): Promise<{ zk: string, nodes: NodeFixture[], agent: AgentFixture, file: string, model: Buffer, uuid: string }> {
  const zk = (await startZk(t)).connectString
  const hostArgs = nodeHost === null ? [] : ['--host', nodeHost]
  const nodes = await Promise.all(['a1', 'a2'].map(async id => await startNode(t, { zk, id, site: 'site-a', extraArgs: hostArgs })))
  // No auto repair, no controller: the test sees the stale mark before it runs the repair itself.
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-auto-repair', '--no-controller'] })
  await cliOk(t, ['disk', 'create', 'vol', '--size', '4M', '--block-size', blockSize, '--nodes', 'a1,a2'], zk)
  const file = path.join(agent.mountPoint, 'vol')
  const model = randomBytes(rng(11), SIZE)
  const fh = await fs.promises.open(file, 'r+')
  try {
    for (let off = 0; off < SIZE; off += 128 * KiB) await fh.write(model, off, 128 * KiB, off)
    await fh.sync()
  } finally { await fh.close() }
  const uuid = (await cliJson<Info>(['disk', 'info', 'vol', '--json'], zk)).uuid
  return { zk, nodes, agent, file, model, uuid }
}


// The block's one version file on the node (test/helpers/node-files.ts).
function blockFile (node: NodeFixture, uuid: string, block: number): string {
  const found = versionFiles(node.dataDir, uuid).filter(f => f.startsWith(`${block}.`))
  if (found.length !== 1) throw new Error(`${node.id}: block ${block} has ${found.length} version files`)
  return path.join(node.dataDir, 'disks', uuid, found[0])
}

async function readAt (file: string, off: number, len: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r')
  try {
    const buf = Buffer.alloc(len)
    const { bytesRead } = await fh.read(buf, 0, len, off)
    return buf.subarray(0, bytesRead)
  } finally { await fh.close() }
}

// Reads the flipped page again and again (reads rotate among equally near replicas): every answer
// must be the model's, until the rotten replica is marked stale.
async function readsStayRightUntilStale (t: TestLike & { equal: (a: unknown, b: unknown, m: string) => unknown }, s: { zk: string, file: string, model: Buffer }, off: number, node: string, len = 8 * KiB): Promise<void> {
  let wrong = 0
  await until(`${node} marked stale`, async () => {
    for (let i = 0; i < 4; i++) {
      const got = await readAt(s.file, off - 100, len)
      if (!got.equals(s.model.subarray(off - 100, off - 100 + len))) wrong++
    }
    const info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], s.zk)
    return info.replicasPerNode[node].stale > 0
  }, 30_000, 100)
  t.equal(wrong, 0, 'no read returned the flipped byte')
  const info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], s.zk)
  t.equal(info.replicasPerNode[node].stale, 1, `${node} is stale for exactly the one rotten block (disk info)`)
}

t.test('a flipped byte on one replica: reads stay right over gRPC, the replica is marked stale and repaired; checksums survive a restart; a 512-byte write inside a page keeps them right', { skip }, async (t) => {
  const s = await setup(t, null)  // the nodes are on another host: every read is gRPC
  const a1 = s.nodes[0]
  await a1.restart()  // the sums written before it must still hold after
  const off = 3 * BLOCK + 5000
  flipByte(blockFile(a1, s.uuid, 3), 5000)
  await readsStayRightUntilStale(t, s, off, 'a1')
  t.match(fs.readFileSync(s.agent.logFile, 'utf8'), /failed its checksum/, 'the agent logged it')
  await cliOk(t, ['disk', 'repair', 'vol'], s.zk, 60_000)
  const info = await cliJson<Info>(['disk', 'info', 'vol', '--json'], s.zk)
  t.equal(info.replicasPerNode.a1.stale, 0, 'repaired')
  const f = blockFile(a1, s.uuid, 3)
  t.same(fs.readFileSync(f), s.model.subarray(3 * BLOCK, 4 * BLOCK), 'the repaired block file holds the right bytes')
  t.ok(fs.readFileSync(f + '.crc').equals(sidecarFor(fs.readFileSync(f))), 'and checksums that match them')
  t.same(await readAt(s.file, 0, SIZE), s.model, 'the whole disk reads back byte for byte')
  // A 512-byte write inside a 4 KiB page keeps both replicas' checksums right.
  const small = randomBytes(rng(12), 512)
  const at = 2 * BLOCK + 3 * 4096 + 1024
  const fh = await fs.promises.open(s.file, 'r+')
  try { await fh.write(small, 0, 512, at); await fh.sync() } finally { await fh.close() }
  small.copy(s.model, at)
  t.same(await readAt(s.file, at - 4096, 3 * 4096), s.model.subarray(at - 4096, at + 2 * 4096), 'reads back')
  for (const n of s.nodes) {
    const f = blockFile(n, s.uuid, 2)
    t.ok(fs.readFileSync(f + '.crc').equals(sidecarFor(fs.readFileSync(f))), `${n.id}: the sidecar matches the block's bytes`)
  }
})

t.test('a flipped byte under a short-circuit read is never served either', { skip }, async (t) => {
  const s = await setup(t, 'hv-a')  // nodes on the agent's host: reads go to a1's files directly
  const off = 5 * BLOCK + 9000
  flipByte(blockFile(s.nodes[0], s.uuid, 5), 9000)
  await readsStayRightUntilStale(t, s, off, 'a1')
  t.same(await readAt(s.file, 0, SIZE), s.model, 'the whole disk reads back byte for byte')
})

// Reads above 256 KiB (SYNC_IO_MAX_BYTES) sum their pages in the thread pool
// (storagenode/pread-sums.ts), on the agent's short-circuit path and on the node alike.
t.test('a flipped byte under a 512 KiB short-circuit read (summed in the thread pool) is never served', { skip }, async (t) => {
  const s = await setup(t, 'hv-a', '1M')
  const off = 2 * MiB + 9000
  flipByte(blockFile(s.nodes[0], s.uuid, 2), 9000)
  await readsStayRightUntilStale(t, s, off, 'a1', 512 * KiB)
  t.same(await readAt(s.file, 0, SIZE), s.model, 'the whole disk reads back byte for byte')
})
