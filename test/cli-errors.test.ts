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
    { args: ['disk', 'create', 'x', '--size', '1G', '--replicas', '3', '--site', 'site-a'], exit: 1, message: /site site-a has 2 live storage nodes; the disk needs 3 replicas/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--site', 'mars'], exit: 1, message: /unknown site 'mars'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--nodes', 'a1,zz'], exit: 1, message: /unknown storage node 'zz'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--site', 'site-a', '--nodes', 'a1'], exit: 2, message: /either --site or --nodes/ },
    { args: ['disk', 'create', 'keep', '--size', '2G'], exit: 1, message: /disk 'keep' already exists/ },
    { args: ['disk', 'info', 'nope'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'delete', 'nope'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'resize', 'nope', '--size', '2G'], exit: 1, message: /unknown disk 'nope'/ },
    { args: ['disk', 'resize', 'keep', '--size', '512M'], exit: 2, message: /shrinking .* is refused/ },
    { args: ['disk', 'create', 'x'], exit: 2, message: /required option '--size <size>'/ },
    { args: ['disk', 'frobnicate'], exit: 2, message: /unknown command 'frobnicate'/ },
    // issue 9 item 7: one parser per kind of value, no excess arguments, on every verb
    { args: ['disk', 'create', 'x', '--size', '0'], exit: 2, message: /bad size '0': must be more than 0 bytes/ },
    { args: ['disk', 'create', 'bad15', 'extra', '--size', '1G'], exit: 2, message: /too many arguments for 'create'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--replicas', ''], exit: 2, message: /bad replica count ''/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--nodes', 'a1,,a2'], exit: 2, message: /bad --nodes 'a1,,a2'/ },
    { args: ['disk', 'create', 'x', '--size', '1G', '--site', 'x/y'], exit: 2, message: /bad site 'x\/y'/ },
    { args: ['--zk-timeout-ms', '-5', 'disk', 'list'], exit: 2, message: /bad --zk-timeout-ms '-5': expected a whole number of milliseconds/ },
    { args: ['--zk-timeout-ms', 'soon', 'disk', 'list'], exit: 2, message: /bad --zk-timeout-ms 'soon'/ },
    { args: ['--zk-timeout-ms', '0', 'disk', 'list'], exit: 2, message: /bad --zk-timeout-ms '0': must be 1 to/ },
    { args: ['node', 'list', '--from', 'x/y'], exit: 2, message: /bad host name in --from 'x\/y'/ },
    { args: ['node', 'list', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['--zk', '', 'disk', 'list'], exit: 2, message: /bad --zk '': expected HOST:PORT/ },
    { args: ['--zk', 'zk1:2181,', 'disk', 'list'], exit: 2, message: /bad --zk 'zk1:2181,'/ },
    { args: ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', '/nonexistent', '--listen', 'foo'], exit: 2, message: /bad --listen 'foo': expected HOST:PORT/ },
    { args: ['disk', 'list', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['disk', 'info', 'keep', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['disk', 'resize', 'keep', '--size', 'big'], exit: 2, message: /bad size 'big'/ },
    { args: ['disk', 'resize', 'keep', '--size', '0'], exit: 2, message: /bad size '0'/ },
    { args: ['disk', 'delete', 'keep', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['disk', 'repair', 'keep', '--rate', 'fast'], exit: 2, message: /bad rate 'fast'/ },
    { args: ['disk', 'repair', 'keep', '--rate', '0'], exit: 2, message: /bad rate '0'/ },
    { args: ['relocate', 'keep', '--to', 'site-b', '--replicas', 'two'], exit: 2, message: /bad replica count 'two'/ },
    { args: ['relocate', 'keep', 'extra', '--to', 'site-b'], exit: 2, message: /too many arguments/ },
    { args: ['relocate', 'keep', '--to', 'site-b', '--rate', '-1'], exit: 2, message: /bad rate '-1'/ },
    { args: ['snapshot', 'create', 'keep@s1', '--timeout-ms', 'soon'], exit: 2, message: /bad --timeout-ms 'soon'/ },
    { args: ['snapshot', 'create', 'keep@s1', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['snapshot', 'list', 'keep', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['clone', 'keep@s1', 'c1', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['import', '-', 'imp', '--replicas', 'two'], exit: 2, message: /bad replica count 'two'/ },
    { args: ['import', '-', 'imp', '--format', 'qcow2'], exit: 2, message: /bad --format 'qcow2'/ },
    { args: ['import', '-', 'imp', '--block-size', '0'], exit: 2, message: /bad block size '0'/ },
    { args: ['export', 'keep@s1', '/dev/null', '--format', 'zip'], exit: 2, message: /bad --format 'zip'/ },
    { args: ['prepare-migration', 'keep', '--to-host', 'hv-b', '--rate', 'x'], exit: 2, message: /bad rate 'x'/ },
    { args: ['finish-migration', 'keep', '--release-timeout-ms', '1e3'], exit: 2, message: /bad --release-timeout-ms '1e3'/ },
    { args: ['site', 'list', 'extra'], exit: 2, message: /too many arguments/ },
    { args: ['top', '--from', 'a b'], exit: 2, message: /bad host name in --from 'a b'/ },
    { args: ['mount', '/nonexistent-mnt', '--site', 'site-a', '--io-retry-ms', 'ten'], exit: 2, message: /bad --io-retry-ms 'ten'/ },
    { args: ['mount', '/nonexistent-mnt', '--site', 'site-a', '--local-read-files', '0'], exit: 2, message: /bad --local-read-files '0': must be 1 to/ },
    { args: ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', '/nonexistent', '--capacity', '10Q'], exit: 2, message: /bad capacity '10Q'/ },
    { args: ['dev', 'up', '--sites', 'two'], exit: 2, message: /bad --sites 'two'/ },
    { args: ['libvirt', 'install-hook', '--dir', '/nonexistent', '--timeout-ms', '-1'], exit: 2, message: /bad --timeout-ms '-1'/ }
  ]
  for (const k of cases) {
    const res = await runCli(k.args, { zk })
    t.equal(res.code, k.exit, `ukai ${k.args.join(' ')} exits ${k.exit}`)
    t.match(res.stderr, k.message, `ukai ${k.args.join(' ')} says why`)
  }
  t.equal((await runCli(['disk', 'list', '--json'], { zk })).stdout, listBefore, 'no disk was created, changed or deleted')
  t.same(JSON.parse((await runCli(['snapshot', 'list', 'keep', '--json'], { zk })).stdout), [], 'no snapshot was taken')
  t.same(JSON.parse((await runCli(['node', 'list', '--json'], { zk })).stdout).map((n: { id: string }) => n.id).sort(), ['a1', 'a2', 'b1', 'b2'], 'no node registered')

  // Accepted as stated: a no-op repair is success, and says so.
  const repair = await runCli(['disk', 'repair', 'keep'], { zk })
  t.equal(repair.code, 0, 'disk repair of a healthy disk exits 0')
  t.match(repair.stdout, /disk keep has no stale replica; nothing to repair/)
  const repairJson = await runCli(['disk', 'repair', 'keep', '--json'], { zk })
  t.equal(repairJson.code, 0)
  t.match(JSON.parse(repairJson.stdout), { disk: 'keep', state: 'nothing-to-repair' })
  t.equal((await runCli(['--zk-timeout-ms', '3000', 'disk', 'list'], { zk })).code, 0, 'a good --zk-timeout-ms is accepted')
  t.equal((await runCli(['disk', 'create', 'two', '--size', '64M', '--replicas', '2', '--site', 'site-b'], { zk })).code, 0, 'a good --replicas is accepted')
})

t.test('daemons and connections: unreachable ZooKeeper, unwritable data dir', async (t) => {
  const res = await runCli(['--zk', '127.0.0.1:9', '--zk-timeout-ms', '1500', 'disk', 'list'])
  t.equal(res.code, 1)
  t.match(res.stderr, /cannot reach ZooKeeper at 127\.0\.0\.1:9 within 1500 ms/)
  // Daemons honour --zk-timeout-ms too (they used the 5 s default whatever it said).
  const dd = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-datadir-'))
  t.teardown(() => fs.rmSync(dd, { recursive: true, force: true }))
  // --insecure: these check ZooKeeper's and the data dir's errors, which come after the
  // certificate's (test/security-tls.test.ts checks that one).
  const daemon = await runCli(['--insecure', '--zk', '127.0.0.1:9', '--zk-timeout-ms', '700', 'storagenode', '--id', 'z1', '--site', 'site-a', '--data-dir', dd, '--listen', '127.0.0.1:0'])
  t.equal(daemon.code, 1)
  t.match(daemon.stderr, /cannot reach ZooKeeper at 127\.0\.0\.1:9 within 700 ms/)

  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agents: false })
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-datadir-')), 'not-a-dir')
  t.teardown(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }))
  fs.writeFileSync(file, 'x')
  const node = await runCli(['--insecure', '--zk', c.zk.connectString, 'storagenode', '--id', 'bad', '--site', 'site-a', '--data-dir', file, '--listen', '127.0.0.1:0'])
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
