// Guest TRIM on the mount: fallocate(PUNCH_HOLE) and friends free the space on every replica's
// storage node (thin disks stay thin), the range reads as zeros from every host, and everything
// else is intact byte for byte. Also: the block store's snapshot-safe discard (a committed older
// version is never touched) and fencing of discards, and QEMU's own discard through qemu-io.
import { execFile, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { pullBlock } from '../src/storagenode/block-pull'
import { BlockStore } from '../src/storagenode/block-store'
import { StorageClient } from '../src/storagenode/client'
import { startStorageServer } from '../src/storagenode/server'
import { makeTempDir, startCluster, type NodeFixture } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'

const exec = promisify(execFile)
const KiB = 1024
const MiB = 1024 * KiB

// Bytes the node's block version files (<uuid>/<block>.<epoch>) occupy on its disk (st_blocks),
// as du would count them.
function allocatedBytes (node: NodeFixture): number {
  let total = 0
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile() && /^\d+\.\d+$/.test(e.name)) total += fs.statSync(p).blocks * 512
    }
  }
  const disks = path.join(node.dataDir, 'disks')
  if (fs.existsSync(disks)) walk(disks)
  return total
}

function mib (bytes: number): string { return `${(bytes / MiB).toFixed(2)} MiB` }

t.test('TRIM through the mount frees node space', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 1 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const b = c.agent('site-b')
  const nodes = c.nodes // a1 (site-a), b1 (site-b): the disk's two replicas
  const sizeBytes = 32 * MiB
  const res = await runCli(['disk', 'create', 'trim', '--size', '32M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,b1'], { zk })
  t.equal(res.code, 0, res.stderr)
  const file = path.join(a.mountPoint, 'trim')
  let model = Buffer.alloc(sizeBytes)
  const rand = rng(7)
  const data = randomBytes(rand, 24 * MiB)
  data.copy(model, 0)
  const fh = await fs.promises.open(file, 'r+')
  try {
    await fh.write(data, 0, data.length, 0)
    await fh.sync()
  } finally {
    await fh.close()
  }
  const before = nodes.map(allocatedBytes)
  t.comment(`after writing 24 MiB: ${nodes.map((n, i) => `${n.id} ${mib(before[i])}`).join(', ')}`)
  for (const n of before) t.ok(n >= 24 * MiB, 'each replica holds the 24 MiB written')

  const check = async (t: Test, what: string): Promise<void> => {
    t.equal(sha256(await fs.promises.readFile(file)), sha256(model), `${what}: the disk equals the model on site A`)
    t.equal(sha256(await fs.promises.readFile(path.join(b.mountPoint, 'trim'))), sha256(model), `${what}: and on site B`)
  }

  t.test('fallocate --punch-hole of whole blocks drops them on every replica', async (t) => {
    await exec('fallocate', ['--punch-hole', '--offset', String(4 * MiB), '--length', String(12 * MiB), file])
    model.fill(0, 4 * MiB, 16 * MiB)
    const after = nodes.map(allocatedBytes)
    t.comment(`after punching 12 MiB: ${nodes.map((n, i) => `${n.id} ${mib(after[i])}`).join(', ')}`)
    after.forEach((n, i) => t.equal(before[i] - n, 12 * MiB, `${nodes[i].id} freed exactly the 12 punched MiB`))
    await check(t, 'after the punch')
  })

  t.test('an unaligned punch zeroes the edges and frees the pages inside', async (t) => {
    const was = nodes.map(allocatedBytes)
    const offset = 18 * MiB + 100 * KiB + 123
    const length = 3 * MiB + 5 * KiB + 7 // blocks 18..21: partial, whole, whole, partial
    await exec('fallocate', ['--punch-hole', '--offset', String(offset), '--length', String(length), file])
    model.fill(0, offset, offset + length)
    const after = nodes.map(allocatedBytes)
    t.comment(`after an unaligned ${mib(length)} punch: ${nodes.map((n, i) => `${n.id} ${mib(was[i] - after[i])} freed`).join(', ')}`)
    // Every whole 4 KiB page inside the range is freed; at most the two edge pages stay.
    const pagesInside = Math.floor((offset + length) / 4096) - Math.ceil(offset / 4096)
    after.forEach((n, i) => t.ok(was[i] - n >= pagesInside * 4096, `${nodes[i].id} freed ${was[i] - n} >= ${pagesInside * 4096} bytes`))
    await check(t, 'after the unaligned punch')
  })

  t.test('zero-range reads as zeros and frees; plain fallocate is a no-op inside, grows past the end', async (t) => {
    const was = nodes.map(allocatedBytes)
    await exec('fallocate', ['--zero-range', '--keep-size', '--offset', String(MiB), '--length', String(2 * MiB), file])
    model.fill(0, MiB, 3 * MiB)
    nodes.forEach((n, i) => t.equal(was[i] - allocatedBytes(n), 2 * MiB, `${n.id}: zero-range freed its 2 MiB`))
    await exec('fallocate', ['--offset', '0', '--length', String(MiB), file])
    await check(t, 'after zero-range and a plain fallocate inside the disk')
    await exec('fallocate', ['--length', String(40 * MiB), file])
    t.equal(fs.statSync(file).size, 40 * MiB, 'fallocate past the end grows the disk')
    const grown = Buffer.alloc(40 * MiB)
    model.copy(grown)
    model = grown
    t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'old bytes intact, the new part reads as zeros')
    await exec('fallocate', ['--keep-size', '--offset', String(39 * MiB), '--length', String(4 * MiB), file])
    t.equal(fs.statSync(file).size, 40 * MiB, 'with --keep-size it does not grow')
    await check(t, 'after growing')
  })

  t.test('modes the mount does not offer fail with EOPNOTSUPP, nothing changed', async (t) => {
    const digest = sha256(await fs.promises.readFile(file))
    const r = await exec('fallocate', ['--collapse-range', '--offset', '0', '--length', String(MiB), file]).catch(e => e as { stderr: string, code: number })
    t.match((r as { stderr: string }).stderr, /not supported/i, 'collapse-range: Operation not supported')
    t.equal(sha256(await fs.promises.readFile(file)), digest, 'the disk is unchanged')
  })

  const noQemuIo = spawnSync('qemu-io', ['--version']).status === 0 ? false : 'qemu-io is not installed (Debian qemu-utils)'
  t.test('qemu-io discard frees node space', { skip: noQemuIo }, async (t) => {
    const r = await runCli(['disk', 'create', 'qemu', '--size', '16M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,b1'], { zk })
    t.equal(r.code, 0, r.stderr)
    const img = path.join(a.mountPoint, 'qemu')
    const was = nodes.map(allocatedBytes)
    await exec('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 8M', '-c', 'flush', img])
    const written = nodes.map(allocatedBytes)
    nodes.forEach((n, i) => t.equal(written[i] - was[i], 8 * MiB, `${n.id} holds the 8 MiB qemu-io wrote`))
    // discard in QEMU's raw driver on a file is fallocate(PUNCH_HOLE|KEEP_SIZE).
    const { stdout } = await exec('qemu-io', ['-f', 'raw', '-c', 'discard 0 4M', '-c', 'read -P 0 0 4M', '-c', 'read -P 0xab 4M 4M', img])
    t.match(stdout, /discard 4194304\/4194304 bytes at offset 0/, 'qemu-io discarded 4 MiB')
    t.notMatch(stdout, /Pattern verification failed/, 'qemu-io reads zeros where it discarded and 0xab elsewhere')
    nodes.forEach((n, i) => t.equal(written[i] - allocatedBytes(n), 4 * MiB, `${n.id} freed the 4 MiB qemu-io discarded`))
    // Write-zeroes that may unmap (detect_zeroes=unmap, guest WRITE SAME/WRITE ZEROES) punches too.
    const zeroed = await exec('qemu-io', ['-f', 'raw', '-c', 'write -z -u 4M 2M', '-c', 'read -P 0 4M 2M', '-c', 'read -P 0xab 6M 2M', img])
    t.notMatch(zeroed.stdout, /Pattern verification failed/, 'write -z -u reads back as zeros, the rest intact')
    nodes.forEach((n, i) => t.equal(written[i] - allocatedBytes(n), 6 * MiB, `${n.id} freed the 2 MiB more that qemu-io zeroed with unmap`))
    // preallocation=falloc is fallocate mode 0: accepted, nothing allocated (thin). (The CLI
    // refuses a 0-byte disk, so the disk starts at 512 bytes and qemu-img grows it with falloc.)
    const before = nodes.map(allocatedBytes)
    const made = await runCli(['disk', 'create', 'prealloc', '--size', '512', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,b1'], { zk })
    t.equal(made.code, 0, made.stderr)
    await exec('qemu-img', ['resize', '-f', 'raw', '--preallocation=falloc', path.join(a.mountPoint, 'prealloc'), '16M'])
    t.equal(fs.statSync(path.join(a.mountPoint, 'prealloc')).size, 16 * MiB, 'qemu-img resize --preallocation=falloc on the mount')
    // At most QEMU's probe of the first 4 KiB (its alignment check) is written: that is all.
    nodes.forEach((n, i) => t.ok(allocatedBytes(n) - before[i] <= 4096, `${n.id} allocated ${allocatedBytes(n) - before[i]} bytes for it (at most QEMU's first 4 KiB)`))
  })
})

t.test('block store: discard keeps committed versions, frees the head, is fenced', async (t) => {
  const dir = makeTempDir(t, 'store')
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(() => store.close())
  const uuid = 'trim-store'
  const block = Buffer.alloc(1 * MiB, 0x5a)
  const versionFile = (b: number, e: number): string => path.join(dir, 'disks', uuid, `${b}.${e}`)
  const alloc = (b: number, e: number): number => fs.statSync(versionFile(b, e)).blocks * 512

  await store.write(uuid, 0, 1, 0, block, 1)
  await store.write(uuid, 1, 1, 0, block, 1)
  await store.flush(uuid, 1)
  // Epoch 1 is now committed (a snapshot); the head is epoch 2.
  await store.discard(uuid, 0, 2, 0, 1 * MiB, 1)
  t.same(await store.read(uuid, 0, 2, 0, 1 * MiB), Buffer.alloc(1 * MiB), 'whole block at the head reads as zeros')
  t.same(await store.read(uuid, 0, 1, 0, 1 * MiB), block, 'the committed version still reads its bytes')
  t.equal(alloc(0, 2), 0, 'the head version is an empty file (no clone of the old bytes)')
  t.ok(alloc(0, 1) >= 1 * MiB, 'the committed version keeps its space')

  await store.discard(uuid, 1, 2, 64 * KiB, 256 * KiB, 1)
  const expect = Buffer.from(block)
  expect.fill(0, 64 * KiB, 320 * KiB)
  t.same(await store.read(uuid, 1, 2, 0, 1 * MiB), expect, 'partial discard at the head: zeros inside, old bytes around')
  t.same(await store.read(uuid, 1, 1, 0, 1 * MiB), block, 'the committed version is untouched')
  t.equal(alloc(1, 2), 1 * MiB - 256 * KiB, 'the head copy has a real hole where it was discarded')

  await store.write(uuid, 2, 2, 0, block, 1)
  await store.discard(uuid, 2, 2, 100 * KiB, 200 * KiB, 1)
  t.equal(alloc(2, 2), 1 * MiB - 200 * KiB, 'a punched hole inside a block frees its pages')

  await store.fence(uuid, 5)
  await t.rejects(store.discard(uuid, 2, 2, 0, 4096, 4), { code: 'FENCED' }, 'a discard under an older lease epoch is refused')
  t.same(await store.read(uuid, 2, 2, 0, 4096), block.subarray(0, 4096), 'and changed nothing')
})

t.test('node-to-node pull keeps discarded ranges zero and thin, also over committed versions', async (t) => {
  const srcDir = makeTempDir(t, 'pull-src')
  const server = await startStorageServer({ nodeId: 'src', dataDir: srcDir, listen: '127.0.0.1:0' })
  t.teardown(() => server.close(0))
  const client = new StorageClient({ nodeId: 'src', address: server.address, tls: { kind: 'insecure' } })  // an in-process server without TLS
  t.teardown(() => client.close())
  const dstDir = makeTempDir(t, 'pull-dst')
  const target = await BlockStore.open({ nodeId: 'dst', dataDir: dstDir })
  t.teardown(() => target.close())
  const uuid = 'trim-pull'
  const full = Buffer.alloc(1 * MiB, 0x5a)
  const io = { diskUuid: uuid, leaseEpoch: 1 }
  // Block 0: committed epoch 1 full; head epoch 2 with a hole and a truncated tail.
  await client.write({ ...io, block: 0, epoch: 1, offset: 0, data: full })
  await client.discard({ ...io, block: 0, epoch: 2, offset: 64 * KiB, length: 256 * KiB })
  await client.discard({ ...io, block: 0, epoch: 2, offset: 768 * KiB, length: 256 * KiB })
  // Block 1: committed epoch 1 full; head epoch 2 discarded whole (an empty version).
  await client.write({ ...io, block: 1, epoch: 1, offset: 0, data: full })
  await client.discard({ ...io, block: 1, epoch: 2, offset: 0, length: 1 * MiB })
  // Block 2: only a head version with a punched hole.
  await client.write({ ...io, block: 2, epoch: 2, offset: 0, data: full })
  await client.discard({ ...io, block: 2, epoch: 2, offset: 100 * KiB, length: 500 * KiB })
  // The target held stale bytes of block 2 (a replica that missed writes): they must not survive.
  await target.write(uuid, 2, 2, 0, Buffer.alloc(1 * MiB, 0xee), 1)

  for (const block of [0, 1, 2]) await pullBlock(target, client, { diskUuid: uuid, block, leaseEpoch: 1 })
  for (const block of [0, 1, 2]) {
    for (const epoch of [1, 2]) {
      const want = await client.read({ diskUuid: uuid, block, epoch, offset: 0, length: 1 * MiB })
      t.ok((await target.read(uuid, block, epoch, 0, 1 * MiB)).equals(want), `block ${block} at epoch ${epoch} reads as on the source`)
    }
  }
  const allocated = (dir: string, b: number, e: number): number => fs.statSync(path.join(dir, 'disks', uuid, `${b}.${e}`)).blocks * 512
  t.equal(allocated(dstDir, 0, 2), 512 * KiB, 'block 0 head: only the 512 KiB that hold data')
  t.equal(allocated(dstDir, 1, 2), 0, 'block 1 head: an empty version over the committed one')
  t.equal(allocated(dstDir, 2, 2), 1 * MiB - 500 * KiB, 'block 2: the hole is a hole here too')
})
