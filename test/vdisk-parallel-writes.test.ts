// The mount lets the kernel hand us direct writes to one disk file in parallel. Four processes
// write the same region at once, each its own pattern, in 64 KiB pieces: afterwards every piece
// holds exactly one writer's bytes (no torn or mixed piece), and the two replicas' block files are
// byte-identical (overlapping writes reached both nodes in the same order). The whole disk read
// through the mount equals what the nodes hold.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startCluster, type NodeFixture } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { dd } from './helpers/dd'
import { sha256 } from './helpers/model'
import { versionFiles } from './helpers/node-files'

const KiB = 1024
const MiB = 1024 * KiB
const REGION = 8 * MiB
const PIECE = 64 * KiB
const WRITERS = 4
const ROUNDS = 3

// The newest version file of each block on a node, keyed by block index.
function blockFiles (node: NodeFixture, uuid: string): Map<number, string> {
  const dir = path.join(node.dataDir, 'disks', uuid)
  const newest = new Map<number, { epoch: number, file: string }>()
  for (const name of versionFiles(node.dataDir, uuid)) {
    const [block, epoch] = name.split('.').map(Number)
    if ((newest.get(block)?.epoch ?? -1) < epoch) newest.set(block, { epoch, file: path.join(dir, name) })
  }
  return new Map([...newest].map(([b, v]) => [b, v.file]))
}

t.test('parallel overlapping writes to one disk file', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const res = await runCli(['disk', 'create', 'par', '--size', '16M', '--block-size', '1M', '--replicas', '2'], { zk })
  t.equal(res.code, 0, res.stderr)
  const file = path.join(a.mountPoint, 'par')
  const patterns = Array.from({ length: WRITERS }, () => crypto.randomBytes(REGION))
  const srcDir = path.dirname(c.nodes[0].dir)
  const srcs = patterns.map((p, i) => {
    const f = path.join(srcDir, `pattern-${i}`)
    fs.writeFileSync(f, p)
    return f
  })
  // Each round, every writer sweeps the region from a different starting piece, so the writers
  // keep overlapping each other rather than one finishing first.
  for (let round = 0; round < ROUNDS; round++) {
    await Promise.all(srcs.map(async (src, i) => {
      const pieces = REGION / PIECE
      const start = ((i * pieces) / WRITERS + round * 7) % pieces
      await dd([`if=${src}`, `of=${file}`, `bs=${PIECE}`, `skip=${start}`, `seek=${start}`, `count=${pieces - start}`, 'conv=notrunc', 'oflag=direct', 'status=none'])
      await dd([`if=${src}`, `of=${file}`, `bs=${PIECE}`, 'count=' + String(start), 'conv=notrunc', 'oflag=direct', 'status=none'])
    }))
  }

  const disk = await fs.promises.readFile(file)
  let torn = 0
  const winners = new Set<number>()
  for (let off = 0; off < REGION; off += PIECE) {
    const piece = disk.subarray(off, off + PIECE)
    const who = patterns.findIndex(p => p.subarray(off, off + PIECE).equals(piece))
    if (who < 0) torn++
    else winners.add(who)
  }
  t.equal(torn, 0, 'every 64 KiB piece holds exactly one writer\'s bytes')
  t.ok(disk.subarray(REGION).every(x => x === 0), 'nothing was written past the region')
  t.comment(`pieces won by ${winners.size} different writers`)

  const info = await cliJson<{ uuid: string }>(['disk', 'info', 'par', '--json'], zk)
  const [n1, n2] = c.nodes
  const f1 = blockFiles(n1, info.uuid)
  const f2 = blockFiles(n2, info.uuid)
  t.same([...f1.keys()].sort((x, y) => x - y), [...f2.keys()].sort((x, y) => x - y), 'both replicas hold the same blocks')
  let differing = 0
  for (const [block, f] of f1) {
    const one = fs.readFileSync(f)
    const two = fs.readFileSync(f2.get(block) as string)
    const want = disk.subarray(block * MiB, (block + 1) * MiB)
    // A version file may be shorter than the block (its tail never written): compare padded.
    const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc(MiB - b.length)])
    if (sha256(pad(one)) !== sha256(pad(two)) || !pad(one).equals(want)) differing++
  }
  t.equal(differing, 0, `all ${f1.size} blocks are identical on ${n1.id} and ${n2.id} and equal what the mount reads`)
})
