// Issue 14 part 6, the rough edges an operator hits first around a mount and a relocation, each
// run as an operator runs it (the real CLI, real ZooKeeper, storage nodes and mounts):
// - a snapshot of a disk the mount already knew shows under MNT/.snapshots (and a grow of it
//   elsewhere shows in its size): disks made on the mount were never watched;
// - `relocate --wait` run by the CLI itself (nobody holds the lease) shows the copy advancing,
//   ends at "N of N", with no MaxListenersExceededWarning over the bar nor in the agent's log
//   after the disk is opened and closed again and again;
// - progress figures agree: a repair ends at what it copied, not the disk's written bytes; a
//   cancelled relocation has no ETA; `relocate status` keeps a long reason inside its column;
// - `disk list` PLACEMENT follows a relocation to a site;
// - (part 4) `du` and `qemu-img info` on the mount show the blocks a disk really uses.
import { execFile, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { RelocationRecord } from '../src/meta/schema'
import { fuseUnavailable, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { untilValue } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'

const MiB = 1024 * 1024
const exec = promisify(execFile)

interface Status { disk: string, state: string, percent: number, etaSec: number | null, rateBytesPerSec: number, progress: { bytes: number, blocks: number }, plan: { bytes: number, writtenBlocks: number } }
interface Info { leaseHolder: string | null, staleBlocks: number }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> => await untilValue(what, fn, timeoutMs, 200)

// The percentages a non-TTY progress bar printed (one line every 2 s, and one at the end).
function percents (stdout: string): number[] {
  return [...stdout.matchAll(/ (\d+)% \| /g)].map(m => Number(m[1]))
}

// The daemons print where a process warning (a listener leak) came from, into their logs.
process.env.NODE_OPTIONS = '--trace-warnings'
t.test('rough edges: mount and relocation', { skip: fuseUnavailable() ?? false }, async (t) => {
  // The controller would repair a node's stale blocks by itself; this test checks `disk repair`'s own run.
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agentArgs: ['--no-controller'] })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const ok = async (args: string[], timeoutMs?: number): Promise<string> => {
    const r = await runCli(args, { zk, timeoutMs })
    t.equal(r.code, 0, `ukai ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const leaseFree = async (disk: string): Promise<void> => {
    await until(`the lease of ${disk} to be free`, async () => (await cliJson<Info>(['disk', 'info', disk], zk)).leaseHolder === null ? true : undefined)
  }

  t.test('a snapshot of a disk made on the mount shows under .snapshots', async (t) => {
    const file = path.join(a.mountPoint, 'made-here')
    fs.closeSync(fs.openSync(file, 'w'))      // a disk made on the mount: the mount knows it from then on
    fs.truncateSync(file, 4 * MiB)
    await ok(['snapshot', 'create', 'made-here@s1'])
    const listed = await until('made-here@s1 under .snapshots', async () => fs.readdirSync(path.join(a.mountPoint, '.snapshots')).includes('made-here@s1') ? true : undefined, 10_000).catch(() => false)
    t.ok(listed, 'ls MNT/.snapshots lists the new snapshot')
    await ok(['disk', 'resize', 'made-here', '--size', '8M'])
    const grown = await until('the grown size on the mount', async () => fs.statSync(file).size === 8 * MiB ? true : undefined, 10_000).catch(() => false)
    t.ok(grown, 'a grow by the CLI shows in the size the mount reports')
  })

  t.test('du and qemu-img info see the blocks a disk really uses (st_blocks)', async (t) => {
    await ok(['disk', 'create', 'half', '--size', '64M', '--block-size', '1M', '--site', 'site-a'])
    const file = path.join(a.mountPoint, 'half')
    const fh = await fs.promises.open(file, 'r+')
    await fh.write(randomBytes(rng(16), 8 * MiB), 0, 8 * MiB, 0)
    await fh.write(Buffer.alloc(MiB, 7), 0, MiB, 32 * MiB)
    await fh.close()
    const du = async (): Promise<number> => Number((await exec('du', ['-B1', file])).stdout.split(/\s+/)[0])
    const used = await until('du to show 9 MiB', async () => { const n = await du(); return n === 9 * MiB ? n : undefined }, 10_000).catch(async () => await du())
    t.equal(used, 9 * MiB, 'du: the 9 written blocks of 1 MiB, not the 64 MiB size')
    t.equal(fs.statSync(file).size, 64 * MiB, 'the size stays the disk\'s size')
    if (spawnSync('qemu-img', ['--version']).status === 0) {
      t.match((await exec('qemu-img', ['info', '-f', 'raw', file])).stdout, /disk size: 9 MiB/, 'qemu-img info: disk size 9 MiB')
    }
    // Part 1: the same figure in `disk list` and `disk info`, table and JSON.
    const listed = (await cliJson<Array<{ name: string, usedBytes: number | null }>>(['disk', 'list'], zk)).find(d => d.name === 'half')
    t.equal(listed?.usedBytes, 9 * MiB, 'disk list --json: usedBytes of the 9 written blocks')
    const table = await ok(['disk', 'list'])
    t.match(table, /│ SIZE\s*│ USED\s*│/, 'disk list: a USED column right after SIZE')
    t.match(table, /half\s*│[^\n]*│ 64\.0 MiB\s*│ 9\.00 MiB\s*│/, 'disk list: half\'s USED beside its SIZE')
    t.equal((await cliJson<{ usedBytes: number | null }>(['disk', 'info', 'half'], zk)).usedBytes, 9 * MiB, 'disk info --json: usedBytes')
    t.match(await ok(['disk', 'info', 'half']), /^used\s+9\.00 MiB \(9437184 bytes/m, 'disk info: used')
  })

  t.test('relocate --wait run by the CLI: progress moves, ends at N of N, no warning; PLACEMENT follows', async (t) => {
    await ok(['disk', 'create', 'mv', '--size', '16M', '--block-size', '1M', '--site', 'site-a'])
    fs.writeFileSync(path.join(a.mountPoint, 'mv'), randomBytes(rng(14), 16 * MiB), { flag: 'r+' })
    await leaseFree('mv')
    // A snapshot, then 4 blocks written again: those have two versions, and every version moves,
    // so more is copied than the plan's 16 written blocks × 1 MiB × 2 targets.
    await ok(['snapshot', 'create', 'mv@before'])
    const fh = await fs.promises.open(path.join(a.mountPoint, 'mv'), 'r+')
    for (let b = 0; b < 4; b++) await fh.write(Buffer.alloc(MiB, 0x40 + b), 0, MiB, b * MiB)
    await fh.close()
    await leaseFree('mv')
    // 16 blocks (20 versions) to two targets: 40 MiB at 4 MB/s, ~10 s: the bar prints every 2 s.
    const r = await runCli(['relocate', 'mv', '--to', 'site-b', '--rate', '4', '--wait'], { zk, timeoutMs: 90_000 })
    t.comment(r.stdout)
    t.equal(r.code, 0, r.stderr)
    t.comment(r.stderr)
    // The bar goes to stderr (cli-progress), so stdout stays what a script reads.
    t.notMatch(r.stderr, /MaxListenersExceededWarning|Warning/, 'no listener leak warning over the bar')
    const seen = percents(r.stderr)
    t.ok(seen.some(p => p > 0 && p < 100), `the bar moved during the copy (${seen.join(', ')})`)
    t.equal(seen[seen.length - 1], 100, 'and ends at 100%')
    t.match(r.stderr, /100% \| 40\.0 MiB of 40\.0 MiB \|[^\n]*\| ETA - \| done/, 'the last line: what was copied (every version), of the same, no ETA')
    t.notMatch(r.stderr, /\| (\d+(\.\d+)?) MiB of (?!\1)[^|]*\| [^|]*\| [^|]*\| done/, 'never "more of less" at the end')
    t.match(r.stdout, /relocation of mv: done/)
    const [s] = await cliJson<Status[]>(['relocate', 'status', 'mv'], zk)
    t.equal(s.percent, 100)
    t.equal(s.etaSec, null, 'a done relocation has no ETA')
    t.equal(s.progress.bytes, s.plan.bytes, 'bytes copied = bytes planned once done')

    const list = await ok(['disk', 'list'])
    t.match(list, /mv\s+│[^\n]*│\s+site site-b\s+│/, 'disk list PLACEMENT shows the site it moved to')
    const rec = (await cliJson<Array<{ name: string, placement: { site?: string } }>>(['disk', 'list'], zk)).find(d => d.name === 'mv')
    t.same(rec?.placement, { site: 'site-b' }, 'the record\'s placement policy followed the move')

    // The disk opened and closed again and again on site B (a VM started, a qemu-img run…):
    // every open watched the relocation record and the hand-over request anew, and ZooKeeper's
    // client kept each of those watchers until the znode changed.
    const b = c.agent('site-b')
    for (let i = 0; i < 14; i++) {
      const f = await fs.promises.open(path.join(b.mountPoint, 'mv'), 'r+')
      await f.write(Buffer.alloc(4096, i), 0, 4096, 0)
      await f.close()
    }
    await ok(['disk', 'info', 'mv'])
    const leak = fs.readFileSync(b.logFile, 'utf8').split('\n').filter(l => /MaxListenersExceededWarning|^\s+at /.test(l))
    t.same(leak, [], 'no listener leak in the agent\'s log')
  })

  t.test('a repair ends at what it copied', async (t) => {
    await ok(['disk', 'create', 'rp', '--size', '16M', '--block-size', '1M', '--nodes', 'a1,a2'])
    const file = path.join(a.mountPoint, 'rp')
    let fh = await fs.promises.open(file, 'r+')
    await fh.write(randomBytes(rng(15), 16 * MiB), 0, 16 * MiB, 0)
    await fh.sync()                            // durable on both nodes before a2 goes
    await fh.close()
    await c.node('a2').kill('SIGKILL')
    fh = await fs.promises.open(file, 'r+')
    for (let b = 0; b < 4; b++) await fh.write(Buffer.alloc(MiB, b + 1), 0, MiB, b * MiB)
    await fh.sync()
    await fh.close()
    await c.node('a2').restart()
    t.equal((await cliJson<Info>(['disk', 'info', 'rp'], zk)).staleBlocks, 4, 'a2 missed 4 blocks')
    await leaseFree('rp')
    const rr = await runCli(['disk', 'repair', 'rp'], { zk, timeoutMs: 60_000 })
    t.equal(rr.code, 0, rr.stderr)
    const out = rr.stdout
    t.comment(out, rr.stderr)
    t.match(rr.stderr, /100% \| 4\.00 MiB of 4\.00 MiB \|/, 'the repair ends at the 4 MiB it copied, of 4 MiB')
    t.match(out, /repair of rp: done/)
    const [s] = await cliJson<Status[]>(['relocate', 'status', 'rp'], zk)
    t.equal(s.progress.bytes, 4 * MiB)
    t.equal(s.plan.bytes, 4 * MiB, 'the plan is what was copied')
  })

  t.test('a cancelled relocation has no ETA; a long reason stays in its column', async (t) => {
    await ok(['disk', 'create', 'cx', '--size', '64M', '--block-size', '1M', '--site', 'site-a'])
    const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
    t.teardown(() => meta.close())
    const now = Date.now()
    const reason = 'target node b2 is unreachable (14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:40000); redundancy kept on the sources'
    const rec: RelocationRecord = {
      v: 1, id: 'c1', disk: 'cx', targetNodes: ['b1', 'b2'], addedNodes: ['b1', 'b2'], dropNodes: ['a1', 'a2'], rateBytesPerSec: 0,
      state: 'cancelled', reason, executor: '',
      plan: { blocks: 64, writtenBlocks: 40, bytes: 80 * MiB },
      progress: { blocks: 10, bytes: 20 * MiB, updatedAtMs: now },
      createdAtMs: now - 10_000, finishedAtMs: now
    }
    await meta.createRelocation(rec)
    const [s] = await cliJson<Status[]>(['relocate', 'status', 'cx'], zk)
    t.equal(s.etaSec, null, 'no ETA for a cancelled relocation (--json)')
    t.equal(s.percent, 25, 'percent in blocks copied of blocks to copy')
    const table = await ok(['relocate', 'status', 'cx'])
    t.comment(table)
    const row = table.split('\n').find(l => l.includes('cx')) ?? ''
    t.match(row, /│ cancelled\s+│ 25%\s+│ 20\.0 MiB \/ 80\.0 MiB\s+│ 2\.10 MB\/s\s+│ -\s+│/, 'the row: no ETA')
    t.match(row, /│ target node b2 is unreachable[^│]*… │/, 'the reason cut with …')
    t.ok(table.split('\n').every(l => l.length <= 132), `every line within 132 columns (${Math.max(...table.split('\n').map(l => l.length))})`)
  })
})
