// The libvirt QEMU hook and the generic migration commands, against a real two-site cluster:
// install-hook never clobbers, the hook relocates a domain's UKAI disks toward its host's site on
// `migrate`/`prepare`, lets the lease go on `release`, and for everything else — an unrelated
// domain, a disk that is not UKAI's, ZooKeeper down, malformed XML — exits 0 quickly, prints
// nothing on stdout and logs why.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t from 'tap'
import { StorageClient } from '../src/storagenode/client'
import { makeTempDir, processZkAuth, startAgent, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { domainXml, hookLog, installHookFor, runHookScript } from './helpers/libvirt'
import { randomBytes, rng, sha256 } from './helpers/model'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
// Node's start plus one ZooKeeper round: generous for a loaded 2-core machine.
const HOOK_FAST_MS = 8000

interface Info { blocksPerSite: Record<string, number>, uuid: string, lease: unknown }
interface Status { state: string, executor: string, reason: string }

const until = async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> => await untilValue(what, fn, timeoutMs, 250)

async function closedPort (): Promise<number> {
  const srv = net.createServer()
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as net.AddressInfo).port
  await new Promise<void>(resolve => srv.close(() => resolve()))
  return port
}

t.test('libvirt hook', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  const b = await startAgent(t, { zk, host: 'hv-b', site: 'site-b' })
  const dir = makeTempDir(t, 'hooks')
  const hooksDir = path.join(dir, 'hooks')
  const status = async (disk: string): Promise<Status | undefined> => (await cliJson<Status[]>(['relocate', 'status', disk], zk))[0]
  const blocksOn = async (nodeId: string, uuid: string): Promise<number> => {
    const client = new StorageClient({ nodeId, address: c.node(nodeId).address })
    try { return (await client.listBlocks({ diskUuid: uuid })).length } finally { client.close() }
  }

  const hookA = await installHookFor(dir, zk, 'hv-a', a.mountPoint)
  const hookB = await installHookFor(dir, zk, 'hv-b', b.mountPoint)
  const logLines = hookLog

  t.test('install-hook: qemu.d layout, updates its own file, never replaces a foreign one', async (t) => {
    const conf = path.join(dir, 'x.conf')
    const first = await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf, '--host', 'hv-x', '--json'], { zk })
    t.equal(first.code, 0, first.stderr)
    const res = JSON.parse(first.stdout) as { path: string, replaced: boolean, layout: string, configWritten: boolean }
    t.equal(res.path, path.join(hooksDir, 'qemu.d', 'ukai'), 'installed under qemu.d/ (libvirt >= 6.5, or libvirtd not found)')
    t.equal(res.replaced, false)
    t.ok((fs.statSync(res.path).mode & 0o111) !== 0, 'executable')
    t.match(fs.readFileSync(res.path, 'utf8'), new RegExp(`UKAI_HOOK_CONF='${conf.replace(/[.]/g, '\\.')}'`), 'the config path is filled in')
    t.match(fs.readFileSync(conf, 'utf8'), new RegExp(`zk = ${zk}\\nhost = hv-x\\n`), 'the config names ZooKeeper and the host')
    t.notOk(fs.existsSync(path.join(hooksDir, 'qemu')), 'hooks/qemu is left alone')
    const again = await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf], { zk })
    t.equal(again.code, 0, again.stderr)
    t.match(again.stdout, /updated .*qemu\.d\/ukai/)
    const foreign = path.join(hooksDir, 'qemu.d', 'other')
    fs.writeFileSync(foreign, '#!/bin/sh\necho mine\n', { mode: 0o755 })
    const refused = await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf, '--name', 'other'], { zk })
    t.equal(refused.code, 1)
    t.match(refused.stderr, /qemu\.d\/other exists and is not UKAI's hook/)
    t.equal(fs.readFileSync(foreign, 'utf8'), '#!/bin/sh\necho mine\n', 'the foreign hook is unchanged')
    const badConf = await runCli(['libvirt', 'install-hook', '--dir', hooksDir, '--config', conf, '--timeout-ms', '5'], { zk })
    t.equal(badConf.code, 2, 'a bad setting is refused')
    t.match(badConf.stderr, /timeout-ms must be/)
  })

  t.test('robustness: libvirt is never blocked and never told to fail', async (t) => {
    t.equal((await runCli(['disk', 'create', 'plain', '--size', '8M', '--site', 'site-a'], { zk })).code, 0)
    const cases: Array<{ what: string, hook: string, log: string, args: [string, string, string, string], xml: string, logRe: RegExp }> = [
      { what: 'an unrelated domain (disks elsewhere)', hook: hookB.hook, log: hookB.log, args: ['web1', 'prepare', 'begin', '-'], xml: domainXml('web1', ['/var/lib/libvirt/images/web1.qcow2']), logRe: /no disk on a UKAI mount/ },
      { what: 'a domain whose file on the mount is no UKAI disk', hook: hookB.hook, log: hookB.log, args: ['ghost', 'migrate', 'begin', '-'], xml: domainXml('ghost', [path.join(b.mountPoint, 'ghost')]), logRe: /ghost cannot move toward site-b.*|unknown disk 'ghost'/ },
      { what: 'malformed XML', hook: hookB.hook, log: hookB.log, args: ['broken', 'migrate', 'begin', '-'], xml: "<domain><name>broken</name><devices><disk type='file'>", logRe: /cannot read/ },
      { what: 'not XML at all', hook: hookB.hook, log: hookB.log, args: ['junk', 'prepare', 'begin', '-'], xml: '\u0000\u0001 garbage', logRe: /cannot read/ },
      { what: 'an operation the hook does not act on', hook: hookB.hook, log: hookB.log, args: ['plain', 'reconnect', 'begin', '-'], xml: domainXml('plain', [path.join(b.mountPoint, 'plain')]), logRe: /nothing to do for this operation/ }
    ]
    for (const k of cases) {
      const before = logLines(k.log).length
      const r = await runHookScript(k.hook, k.args, k.xml)
      t.equal(r.code, 0, `${k.what}: exit 0${r.code !== 0 ? ` (${r.stderr.slice(0, 300)})` : ''}`)
      t.equal(r.stdout, '', `${k.what}: nothing on stdout (for migrate: keep the XML)`)
      t.ok(r.ms < HOOK_FAST_MS, `${k.what}: returned in ${r.ms} ms`)
      const lines = logLines(k.log).slice(before)
      t.ok(lines.some(l => k.logRe.test(`${l.msg} ${l.err ?? ''}`)), `${k.what}: the log says why (${lines.map(l => l.msg).join(' | ')})`)
      t.ok(lines.some(l => l.domain === k.args[0] && l.op === k.args[1] && l.subOp === k.args[2]), `${k.what}: the log names the call`)
    }
    t.same(await cliJson<Status[]>(['relocate', 'status', 'plain'], zk), [], 'nothing was relocated by any of them')

    // ZooKeeper unreachable: a config pointing at a closed port, a short budget.
    const down = path.join(dir, 'down.conf')
    const downLog = path.join(dir, 'down.log')
    fs.writeFileSync(down, `zk = 127.0.0.1:${await closedPort()}\nzk-auth = ${processZkAuth().file}\nhost = hv-b\nmount = ${b.mountPoint}\ntimeout-ms = 1500\nlog = ${downLog}\n`)
    const hookDown = fs.readFileSync(hookB.hook, 'utf8').replace(/^UKAI_HOOK_CONF=.*$/m, `UKAI_HOOK_CONF='${down}'`)
    const hookDownPath = path.join(dir, 'hook-down')
    fs.writeFileSync(hookDownPath, hookDown, { mode: 0o755 })
    for (const op of [['prepare', 'begin'], ['release', 'end'], ['migrate', 'begin']] as const) {
      const r = await runHookScript(hookDownPath, ['plain', op[0], op[1], '-'], domainXml('plain', [path.join(b.mountPoint, 'plain')]))
      t.equal(r.code, 0, `ZooKeeper down, ${op.join(' ')}: exit 0`)
      t.equal(r.stdout, '')
      t.ok(r.ms < HOOK_FAST_MS, `ZooKeeper down, ${op.join(' ')}: returned in ${r.ms} ms (budget 1500 ms + node start)`)
    }
    t.ok(logLines(downLog).some(l => /ZooKeeper unreachable|ran out of time/.test(l.msg)), 'the log says ZooKeeper was unreachable')
    // A config file that is missing or broken: still exit 0.
    fs.writeFileSync(down, 'zk 127.0.0.1\n')
    const r = await runHookScript(hookDownPath, ['plain', 'prepare', 'begin', '-'], domainXml('plain', [path.join(b.mountPoint, 'plain')]))
    t.equal(r.code, 0, 'a broken config: exit 0')
    t.match(r.stderr, /expected 'key = value'/, 'and says what is wrong on stderr')
  })

  t.test('migration A → B: migrate/prepare on B start the relocation, release on A lets the lease go', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm1', '--size', '16M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const data = randomBytes(rng(11), 16 * MiB)
    // The "source VM": the file open on A, written, so A holds the lease and will run the copy.
    const fa = await fs.promises.open(path.join(a.mountPoint, 'vm1'), 'r+')
    t.teardown(() => fa.close().catch(() => {}))
    await fa.write(data, 0, data.length, 0)
    const xmlB = domainXml('vm1', [path.join(b.mountPoint, 'vm1')])
    const mig = await runHookScript(hookB.hook, ['vm1', 'migrate', 'begin', '-'], xmlB)
    t.equal(mig.code, 0, mig.stderr)
    t.equal(mig.stdout, '', 'migrate: no replacement XML')
    t.ok(mig.ms < HOOK_FAST_MS, `migrate begin returned in ${mig.ms} ms`)
    const started = logLines(hookB.log).find(l => l.domain === 'vm1' && l.action === 'started')
    t.ok(started, 'the log records the relocation it started')
    t.same([...((started?.targetNodes as string[] | undefined) ?? [])].sort(), ['b1', 'b2'], 'toward both of site-b\'s nodes')
    t.equal(started?.executor, 'hv-a', 'run by the lease holder (the source)')
    const prep = await runHookScript(hookB.hook, ['vm1', 'prepare', 'begin', '-'], xmlB)
    t.equal(prep.code, 0)
    t.ok(logLines(hookB.log).some(l => l.domain === 'vm1' && l.op === 'prepare' && (l.action === 'already-relocating' || l.action === 'already-there')), 'prepare after migrate: already on its way (or there)')
    // Switch-over: the source closes (its VM stopped), the destination writes.
    await fa.close()
    const fb = await fs.promises.open(path.join(b.mountPoint, 'vm1'), 'r+')
    t.teardown(() => fb.close().catch(() => {}))
    const page = Buffer.alloc(4096, 0x42)
    await fb.write(page, 0, page.length, 3 * MiB)
    page.copy(data, 3 * MiB)
    const rel = await runHookScript(hookA.hook, ['vm1', 'release', 'end', 'migrated'], domainXml('vm1', [path.join(a.mountPoint, 'vm1')]))
    t.equal(rel.code, 0, 'release: exit 0')
    const relLine = logLines(hookA.log).find(l => l.domain === 'vm1' && l.op === 'release' && l.lease !== undefined)
    t.ok(relLine !== undefined && ['moved', 'free', 'released'].includes(relLine.lease as string), `release on A: the lease is not A's any more (${relLine?.lease})`)
    const end = await until('the relocation to finish', async () => { const s = await status('vm1'); return s !== undefined && (s.state === 'done' || s.state === 'paused') ? s : undefined }, 90_000)
    t.equal(end.state, 'done', end.reason)
    const info = await cliJson<Info>(['disk', 'info', 'vm1'], zk)
    t.same(info.blocksPerSite, { 'site-b': 16 }, 'only site B holds the disk')
    t.equal(await blocksOn('a1', info.uuid) + await blocksOn('a2', info.uuid), 0, "site A's nodes hold none of its blocks")
    const got = Buffer.alloc(data.length)
    await fb.read(got, 0, got.length, 0)
    t.equal(sha256(got), sha256(data), 'every byte verifies on B')
    // A plain start where the disk already is: nothing to do.
    const again = await runHookScript(hookB.hook, ['vm1', 'prepare', 'begin', '-'], xmlB)
    t.equal(again.code, 0)
    t.ok(logLines(hookB.log).some(l => l.domain === 'vm1' && l.action === 'already-there'), 'a start where the data already is: already-there')
  })

  t.test('prepare-migration / finish-migration (no libvirt)', async (t) => {
    t.equal((await runCli(['disk', 'create', 'vm2', '--size', '8M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
    const data = randomBytes(rng(12), 8 * MiB)
    fs.writeFileSync(path.join(a.mountPoint, 'vm2'), data, { flag: 'r+' })
    for (const [args, code, re] of [
      [['prepare-migration', 'vm2', '--to-host', 'nosuch'], 1, /unknown hypervisor 'nosuch'/],
      [['prepare-migration', 'vm2'], 2, /--to-host/],
      [['finish-migration', 'nosuch', '--host', 'hv-a'], 1, /unknown disk 'nosuch'/]
    ] as Array<[string[], number, RegExp]>) {
      const r = await runCli(args, { zk })
      t.equal(r.code, code, `ukai ${args.join(' ')} exits ${code}`)
      t.match(r.stderr, re)
    }
    t.same(await cliJson<Status[]>(['relocate', 'status', 'vm2'], zk), [], 'the refusals changed nothing')
    const prep = await cliJson<Array<{ disk: string, action: string, site: string }>>(['prepare-migration', 'vm2', '--to-host', 'hv-b'], zk)
    t.same(prep.map(p => [p.disk, p.action, p.site]), [['vm2', 'started', 'site-b']])
    const twice = await cliJson<Array<{ action: string }>>(['prepare-migration', 'vm2', '--to-host', 'hv-b'], zk)
    // Idempotent: still relocating, or (the controller ran the unleased copy in the meantime) there.
    t.ok(['already-relocating', 'already-there'].includes(twice[0].action), `idempotent (${twice[0].action})`)
    // Open on A: finish refuses to let go of a disk still in use here.
    const fa = await fs.promises.open(path.join(a.mountPoint, 'vm2'), 'r')
    const busy = await runCli(['finish-migration', 'vm2', '--host', 'hv-a'], { zk })
    await fa.close()
    t.equal(busy.code, 1)
    t.match(busy.stderr, /still in use on hv-a: vm2 \(still-open-here\)/)
    // Nobody holds the lease (no VM writes): --wait runs the relocation to the end.
    const fin = await runCli(['finish-migration', 'vm2', '--host', 'hv-a', '--wait', '--json'], { zk, timeoutMs: 120_000 })
    t.equal(fin.code, 0, fin.stderr)
    const out = JSON.parse(fin.stdout) as Array<{ lease: string, relocation: { state: string } }>
    t.equal(out[0].lease, 'free')
    t.equal(out[0].relocation.state, 'done')
    t.same((await cliJson<Info>(['disk', 'info', 'vm2'], zk)).blocksPerSite, { 'site-b': 8 })
    t.equal(sha256(fs.readFileSync(path.join(b.mountPoint, 'vm2'))), sha256(data), 'every byte verifies')
  })
})
