// Bad input: a clear message naming what was wrong, a non-zero exit status, and nothing changed.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { startAgent, startCluster, startNode } from './helpers/cluster'
import { runCli } from './helpers/cli'

t.test('the CLI refuses bad input and changes nothing', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  t.equal((await runCli(['disk', 'create', 'keep', '--size', '1G', '--site', 'site-a'], { zk })).code, 0, 'a good disk to compare against')
  const listBefore = (await runCli(['disk', 'list', '--json'], { zk })).stdout

  const cases: Array<{ args: string[], exit: number, message: RegExp }> = [
    { args: ['disk', 'create', 'x', '--size', '12Q'], exit: 2, message: /bad size '12Q'/ },
    { args: ['disk', 'create', 'x', '--size', '-5G'], exit: 2, message: /bad size '-5G'/ },
    { args: ['disk', 'create', 'x', '--size', '1000'], exit: 2, message: /multiple of 512/ },
    { args: ['disk', 'create', 'x', '--size', '4P'], exit: 2, message: /largest disk/ },
    { args: ['disk', 'create', 'a/b', '--size', '1G'], exit: 2, message: /bad disk name 'a\/b'/ },
    { args: ['disk', 'create', '.hidden', '--size', '1G'], exit: 2, message: /bad disk name '\.hidden'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--block-size', '3M'], exit: 2, message: /bad block size 3145728: must be a power of two/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--block-size', '128M'], exit: 2, message: /bad block size/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--replicas', '0'], exit: 2, message: /bad replica count 0/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--replicas', 'two'], exit: 2, message: /bad replica count 'two'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--replicas', '3', '--site', 'site-a'], exit: 1, message: /site site-a has 2 live storage node\(s\); the disk needs 3 replica\(s\)/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--site', 'mars'], exit: 1, message: /unknown site 'mars'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--nodes', 'a1,zz'], exit: 1, message: /unknown storage node 'zz'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--site', 'site-a', '--nodes', 'a1'], exit: 2, message: /either --site or --nodes/ },
    { args: ['disk', 'create', 'keep', '--size', '2G'], exit: 1, message: /disk 'keep' already exists/ },
    { args: ['disk', 'info', 'nope'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'delete', 'nope'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'resize', 'nope', '--size', '2G'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'resize', 'keep', '--size', '512M'], exit: 2, message: /shrinking .* is refused/ },
    { args: ['disk', 'create', 'x'], exit: 2, message: /required option '--size <size>'/ },
    { args: ['disk', 'frobnicate'], exit: 2, message: /unknown command 'frobnicate'/ }
  ]
  for (const k of cases) {
    const res = await runCli(k.args, { zk })
    t.equal(res.code, k.exit, `ukai ${k.args.join(' ')} exits ${k.exit}`)
    t.match(res.stderr, k.message, `ukai ${k.args.join(' ')} says why`)
  }
  t.equal((await runCli(['disk', 'list', '--json'], { zk })).stdout, listBefore, 'no disk was created, changed or deleted')
})

t.test('daemons and connections: unreachable ZooKeeper, unwritable data dir', async (t) => {
  const res = await runCli(['--zk', '127.0.0.1:9', '--zk-timeout-ms', '1500', 'disk', 'list'])
  t.equal(res.code, 1)
  t.match(res.stderr, /cannot reach ZooKeeper at 127\.0\.0\.1:9 within 1500 ms/)

  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agents: false })
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-datadir-')), 'not-a-dir')
  t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }))
  fs.writeFileSync(file, 'x')
  const node = await runCli(['--zk', c.zk.connectString, 'storagenode', '--id', 'bad', '--site', 'site-a', '--data-dir', file, '--listen', '127.0.0.1:0'])
  t.not(node.code, 0, 'a storage node with an unusable data dir does not start')
  t.match(node.stderr + node.stdout, new RegExp(`data dir.*${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}|${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*data dir`, 'i'), 'and names the directory')
  const nodes = JSON.parse((await runCli(['node', 'list', '--json'], { zk: c.zk.connectString })).stdout)
  t.same(nodes.map((n: { id: string }) => n.id), ['a1'], 'it registered nothing')
})

t.test('the mount: delete of an open disk, full nodes', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agents: false })
  const zk = c.zk.connectString
  const small = await startNode(t, { zk, id: 'tiny', site: 'site-t', capacity: '1M' })
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--io-retry-ms', '1000'] })
  t.equal((await runCli(['disk', 'create', 'busy', '--size', '8M', '--nodes', 'a1'], { zk })).code, 0)
  const fh = await fs.promises.open(path.join(a.mountPoint, 'busy'), 'r')
  const del = await runCli(['disk', 'delete', 'busy'], { zk })
  t.equal(del.code, 1)
  t.match(del.stderr, /disk 'busy' is open on hv-a; close it first/)
  t.throws(() => fs.unlinkSync(path.join(a.mountPoint, 'busy')), { code: 'EBUSY' }, 'rm on the mount is refused too')
  await fh.close()
  t.ok(fs.existsSync(path.join(a.mountPoint, 'busy')), 'the disk is still there')

  t.equal((await runCli(['disk', 'create', 'full', '--size', '8M', '--block-size', '1M', '--nodes', small.id], { zk })).code, 0)
  const fd = await fs.promises.open(path.join(a.mountPoint, 'full'), 'r+')
  t.teardown(() => fd.close().catch(() => {}))
  await fd.write(Buffer.alloc(512 * 1024, 1), 0, 512 * 1024, 0)
  // Keep writing 128 KiB pieces (the kernel's request size): the node fills up and the mount says
  // ENOSPC, well before the 8 MiB disk is full. (The node accounts each write at its worst case
  // until it measures the real allocation, so the exact byte where it refuses varies a little.)
  const piece = Buffer.alloc(128 * 1024, 2)
  let off = 512 * 1024
  let refused: NodeJS.ErrnoException | null = null
  while (off < 8 * 1024 * 1024 && refused === null) {
    try {
      off += (await fd.write(piece, 0, piece.length, off)).bytesWritten
    } catch (err) {
      refused = err as NodeJS.ErrnoException
    }
  }
  t.equal(refused?.code, 'ENOSPC', 'a full node is ENOSPC on the mount')
  t.ok(off <= 2 * 1024 * 1024, `refused after ${off} bytes on a node capped at 1 MiB`)
  const back = Buffer.alloc(512 * 1024)
  await fd.read(back, 0, back.length, 0)
  t.ok(back.every(x => x === 1), 'what was written before is intact')
})
