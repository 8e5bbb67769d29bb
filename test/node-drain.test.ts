// Issue 11 part 3: `ukai node drain ID --wait` moves everything off a node while it serves and a
// VM writes (model writer, every byte verified afterwards); `node remove` is refused while the
// node holds the only in-sync copy of anything; bad input to config set, drain and remove is a
// clear error, a non-zero exit, and nothing changed.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { fuseUnavailable, startAgent, startCluster, startNode } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { ModelWriter } from './helpers/model-writer'

const KiB = 1024
const MiB = 1024 * KiB
const DISK_BYTES = 4 * MiB
const BLOCKS = 64 // of 64 KiB

interface Info { blocks: number, belowReplicaBlocks: number, replicasPerNode: Record<string, { inSync: number }> }
interface NodeRow { id: string, state: string }

function sha (b: Buffer): string { return crypto.createHash('sha256').update(b).digest('hex') }

t.test('node drain, undrain, remove and their bad inputs', { skip: fuseUnavailable() ?? false }, async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 3, agents: false })
  const zk = c.zk.connectString
  await startNode(t, { zk, id: 'b1', site: 'site-b' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  t.teardown(() => { if (t.passing() === false) t.comment(fs.readFileSync(agent.logFile, 'utf8').split('\n').filter(l => !l.includes('"level":20')).slice(-30).join('\n')) })
  const stateOf = async (id: string): Promise<string | undefined> => (await cliJson<NodeRow[]>(['node', 'list'], zk)).find(n => n.id === id)?.state

  t.test('config set: bad values refused, nothing changed', async (t) => {
    for (const [value, message] of [['0', /must be above 0/], ['-5', /must be above 0/], ['1.5', /whole number/], ['999999999999', /at most 604800000 \(7 days\)/]] as const) {
      const r = await runCli(['config', 'set', 'down-out-ms', value], { zk })
      t.equal(r.code, 2, `down-out-ms ${value}: exit 2`)
      t.match(r.stderr, new RegExp(`bad down-out-ms '${value}': .*${message.source}`), `down-out-ms ${value}: says why`)
    }
    const unknown = await runCli(['config', 'set', 'down-out', '5000'], { zk })
    t.equal(unknown.code, 2)
    t.match(unknown.stderr, /unknown setting 'down-out': one of down-out-ms/)
    const fixed = await runCli(['config', 'set', 'default-replicas', '3'], { zk })
    t.equal(fixed.code, 2)
    t.match(fixed.stderr, /setting 'default-replicas' cannot be changed/)
    t.equal((await runCli(['config', 'get', 'down-out-ms'], { zk })).stdout.trim(), '600000', 'down-out-ms is still the default (10 min)')
    const shown = await cliJson<Array<{ key: string, value: number }>>(['config', 'show'], zk)
    t.equal(shown.find(s => s.key === 'down-out-ms')?.value, 600000, 'config show --json')
  })

  t.test('unknown or malformed node: clear error, non-zero exit', async (t) => {
    for (const verb of ['drain', 'remove']) {
      const r = await runCli(['node', verb, 'zz'], { zk })
      t.equal(r.code, 1, `node ${verb} zz: exit 1`)
      t.match(r.stderr, /unknown storage node 'zz'/, `node ${verb} zz: names it`)
    }
    const bad = await runCli(['node', 'undrain', 'x/y'], { zk })
    t.equal(bad.code, 2, 'node undrain x/y: exit 2')
    t.match(bad.stderr, /bad storage node id 'x\/y'/)
  })

  t.test('a drain that would break a disk\'s placement is refused, nothing changed', async (t) => {
    t.equal((await runCli(['disk', 'create', 'everywhere', '--size', '1M', '--replicas', '3', '--site', 'site-a'], { zk })).code, 0)
    const r = await runCli(['node', 'drain', 'a2'], { zk })
    t.equal(r.code, 1, 'exit 1')
    t.match(r.stderr, /cannot drain node a2, nothing changed: disk 'everywhere' cannot leave node a2: no other node of site site-a \(the disk's placement\) is up, not leaving and has room \(a1 holds the disk; a2 holds the disk; a3 holds the disk\); add a node to site site-a/, 'names the disk and what is missing')
    t.equal(await stateOf('a2'), 'up', 'a2 is not draining')
    t.equal((await runCli(['disk', 'delete', 'everywhere'], { zk })).code, 0)
  })

  t.test('node remove is refused while the node holds the only in-sync copy', async (t) => {
    t.equal((await runCli(['disk', 'create', 'single', '--size', '1M', '--block-size', '64K', '--replicas', '1', '--nodes', 'a2'], { zk })).code, 0)
    await fs.promises.writeFile(path.join(agent.mountPoint, 'single'), crypto.randomBytes(256 * KiB), { flag: 'r+' })
    const r = await runCli(['node', 'remove', 'a2'], { zk })
    t.equal(r.code, 1, 'exit 1')
    t.match(r.stderr, /node a2 holds the only in-sync copy of 16 blocks of disk 'single'; nothing removed/, 'names the disk')
    t.equal(await stateOf('a2'), 'up', 'a2 is still there')
    const json = await runCli(['node', 'remove', 'a2', '--json'], { zk })
    t.match(JSON.parse(json.stderr), { error: { code: 'BUSY', exitStatus: 1 } }, '--json: the error as JSON')
    t.equal((await runCli(['disk', 'delete', 'single'], { zk })).code, 0)
  })

  t.test('drain a node under writes: nothing left on it, every byte intact', async (t) => {
    t.equal((await runCli(['disk', 'create', 'busy', '--size', '4M', '--block-size', '64K', '--nodes', 'a1,a2'], { zk })).code, 0)
    t.equal((await runCli(['disk', 'create', 'idle', '--size', '4M', '--block-size', '64K', '--nodes', 'a1,a3'], { zk })).code, 0)
    const idleModel = crypto.randomBytes(DISK_BYTES)
    await fs.promises.writeFile(path.join(agent.mountPoint, 'idle'), idleModel, { flag: 'r+' })
    // One copy only, on a1, written and not yet flushed when a1 is drained and removed: the
    // guest's fsync must then succeed (a1 owes nothing: the drain's copy was durable).
    t.equal((await runCli(['disk', 'create', 'solo', '--size', '1M', '--block-size', '64K', '--replicas', '1', '--nodes', 'a1'], { zk })).code, 0)
    const soloModel = crypto.randomBytes(MiB)
    const solo = await fs.promises.open(path.join(agent.mountPoint, 'solo'), 'r+')
    t.teardown(() => solo.close().catch(() => {}))
    await solo.write(soloModel, 0, soloModel.length, 0)
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'busy'), 'r+')
    t.teardown(() => fh.close().catch(() => {}))
    const writer = new ModelWriter(fh, DISK_BYTES, { seed: 11, maxWriteBytes: 64 * KiB, pauseMs: 5 })
    for (let i = 0; i < 64; i++) await writer.writeOnce()
    writer.start()
    // Capped at 2 MB/s so that the drain lasts a few seconds under the writes, long enough for
    // the (non-TTY) progress bar to print.
    const drainStartMs = Date.now()
    const drain = await runCli(['node', 'drain', 'a1', '--wait', '--rate', '2'], { zk, timeoutMs: 120_000 })
    await writer.stop()
    t.comment(`drain --wait took ${Date.now() - drainStartMs} ms`)
    t.equal(drain.code, 0, `drain --wait exits 0${drain.code !== 0 ? `: ${drain.stderr}` : ''}`)
    t.match(drain.stdout, /node a1 is draining: 3 disks to move/)
    t.match(drain.stderr, /\d+% \| .* of .* \| .*\/s \| ETA/, 'a progress bar with rate and ETA (on stderr, as relocate --wait)')
    t.match(drain.stdout, /node a1 is drained: it holds no replica/)
    t.comment(`${writer.stats.writes} writes during the drain, ${writer.stats.writesFailed} failed, longest ${writer.stats.longestStallMs} ms`)
    t.equal(writer.stats.writesFailed, 0, 'no write failed during the drain')
    t.equal(await stateOf('a1'), 'draining', 'node list: a1 is draining')
    for (const name of ['busy', 'idle']) {
      const info = await cliJson<Info>(['disk', 'info', name], zk)
      t.notOk('a1' in info.replicasPerNode, `${name}: nothing on a1`)
      t.equal(Object.keys(info.replicasPerNode).length, 2, `${name}: two replicas (${Object.keys(info.replicasPerNode).join(',')})`)
      t.ok(Object.values(info.replicasPerNode).every(r => r.inSync === BLOCKS), `${name}: every block in sync on both`)
      t.equal(info.belowReplicaBlocks, 0)
    }
    t.ok('b1' in (await cliJson<Info>(['disk', 'info', 'busy'], zk)).replicasPerNode || 'a3' in (await cliJson<Info>(['disk', 'info', 'busy'], zk)).replicasPerNode, 'busy went to another node')
    t.same(Object.keys((await cliJson<Info>(['disk', 'info', 'idle'], zk)).replicasPerNode).sort(), ['a2', 'a3'], 'idle: same site first (a2, not b1)')
    const verifyStartMs = Date.now()
    const verified = await writer.verify()
    t.comment(`verify took ${Date.now() - verifyStartMs} ms`)
    t.equal(verified.bytesLost, 0, `busy: ${verified.bytesVerified} bytes verified against the model, none lost`)
    t.equal(sha(await fs.promises.readFile(path.join(agent.mountPoint, 'idle'))), sha(idleModel), 'idle: every byte as written')

    // A new disk never lands on a draining node.
    t.equal((await runCli(['disk', 'create', 'fresh', '--size', '1M', '--replicas', '3'], { zk })).code, 0)
    t.notOk('a1' in (await cliJson<Info>(['disk', 'info', 'fresh'], zk)).replicasPerNode, 'a new disk skips the draining node')

    const undrain = await runCli(['node', 'undrain', 'a1'], { zk })
    t.equal(undrain.code, 0)
    t.equal(await stateOf('a1'), 'up', 'undrain: a1 is up again')
    t.match((await runCli(['node', 'undrain', 'a1'], { zk })).stdout, /was not draining; nothing changed/)

    const removed = await runCli(['node', 'remove', 'a1', '--json'], { zk })
    t.equal(removed.code, 0, `a drained node is removed${removed.code !== 0 ? `: ${removed.stderr}` : ''}`)
    t.same(JSON.parse(removed.stdout), { node: 'a1', state: 'removed', sharedDisks: [] })
    t.equal(await stateOf('a1'), undefined, 'node list no longer shows a1')
    await t.resolves(solo.sync(), 'fsync of writes made while the removed node held the block: nothing owed by a1')
    const soloBack = Buffer.alloc(MiB)
    await solo.read(soloBack, 0, MiB, 0)
    t.equal(sha(soloBack), sha(soloModel), 'solo: every byte as written, now on its new node')
  })
})
