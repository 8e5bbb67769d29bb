// Batched replica writes (the agent's IoBatch stream, several writes per message) and a replica
// killed with SIGKILL in the middle of them: four processes write 4 KiB O_DIRECT pieces of their
// own quarter of the disk at once (the agent receives them in parallel and batches them per
// node) while a2 dies. Every write is acknowledged (one replica is left), a2 is marked stale, and
// after fsync the whole disk reads back byte for byte as the model — nothing acknowledged is lost
// with the batch that was in flight when the node died.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { dd } from './helpers/dd'
import { randomBytes, rng, sha256 } from './helpers/model'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 16 * MiB
const WRITERS = 4
const PIECE = 4 * KiB

interface Info { staleBlocks: number, replicasPerNode: Record<string, { inSync: number, stale: number }> }

t.test('kill -9 of a replica under parallel batched 4 KiB writes', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agentArgs: ['--no-controller'] })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const res = await runCli(['disk', 'create', 'bat', '--size', '16M', '--block-size', '256K', '--nodes', 'a1,a2'], { zk })
  t.equal(res.code, 0, res.stderr)
  const file = path.join(a.mountPoint, 'bat')
  const rand = rng(13)
  const model = randomBytes(rand, SIZE)
  const quarter = SIZE / WRITERS
  const srcDir = path.dirname(c.nodes[0].dir)
  const srcs = Array.from({ length: WRITERS }, (_, i) => {
    const f = path.join(srcDir, `quarter-${i}`)
    fs.writeFileSync(f, model.subarray(i * quarter, (i + 1) * quarter))
    return f
  })
  // Each writer writes the first half of its quarter, then the second half; a2 dies 100 ms into
  // the second halves (2,048 pieces of 4 KiB between the four writers).
  const half = quarter / 2
  const write = async (part: number): Promise<void> => {
    await Promise.all(srcs.map(async (src, i) => {
      const seek = (i * quarter + part * half) / PIECE
      await dd([`if=${src}`, `of=${file}`, `bs=${PIECE}`, `skip=${(part * half) / PIECE}`, `seek=${seek}`, `count=${half / PIECE}`, 'conv=notrunc', 'oflag=direct', 'status=none'])
    }))
  }
  await write(0)
  let secondHalfDone = false
  let killedDuringWrites = false
  const second = write(1).then(() => { secondHalfDone = true })
  await new Promise(resolve => setTimeout(resolve, 100))
  killedDuringWrites = !secondHalfDone
  await c.node('a2').kill('SIGKILL')
  await second
  t.ok(killedDuringWrites, 'a2 was killed while the writes were in flight')
  t.pass('every write was acknowledged with one replica left (dd exited 0)')

  const fh = await fs.promises.open(file, 'r+')
  await fh.sync()
  await fh.close()
  const info = await cliJson<Info>(['disk', 'info', 'bat'], zk)
  t.ok(info.replicasPerNode.a2.stale > 0, `a2 is stale for ${info.replicasPerNode.a2.stale} blocks`)
  t.equal(info.replicasPerNode.a1.stale, 0, 'a1 never went stale')

  const whole = await fs.promises.readFile(file)
  t.equal(sha256(whole), sha256(model), 'every acknowledged byte reads back from the surviving replica')
})
