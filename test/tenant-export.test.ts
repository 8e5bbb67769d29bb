// Export and import through the tenant API (issue 12 part 3): a CLI holding only a tenant's
// certificate (no ZooKeeper credentials, an unreachable ZooKeeper) exports its own disk's
// snapshots — raw to a file, raw to stdout, a stream, an incremental stream — and the bytes equal
// (sha256) what was written through the FUSE mount; it imports a raw image and a full plus an
// incremental stream and reads them back byte for byte through the mount. On another tenant's
// disk both are PERMISSION_DENIED naming the disk with nothing changed (ZooKeeper trees, the
// output file); an import past the capacity quota is refused with the trees unchanged; an
// import whose CLI is killed mid-stream leaves nothing; an export whose reader stalls holds the
// agent back (flow control) and, its CLI killed, the agent stops it. And the agent-side snapshot commit (a
// lease holder answering a snapshot request) refuses a tenant at its snapshots quota with
// QUOTA_EXCEEDED, creating nothing.
import { ChildProcess, spawn, execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { freePort } from '../src/dev/free-port'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { MetaStore } from '../src/meta/store'
import { sleep } from '../src/lib/timers'
import { makeTempDir, processZkAuth, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { identityDir } from './helpers/tls'
import { versionFiles } from './helpers/node-files'
import { TenantApiClient } from '../src/tenantapi/client'
import { openTlsDir } from '../src/storagenode/tls'
import { FAULT_WRITE_DELAY_MS_FILE_ENV } from '../src/storagenode/write-delay-fault'
import { Readable } from 'node:stream'
import { metaTree, rawClient } from './helpers/zk-tree'

const MiB = 1024 * 1024
const sha = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex')

t.test('export and import with a tenant certificate', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  // A write-delay fault, off until the progress test turns it on (a slow node: the apply takes a while).
  const faultFile = path.join(makeTempDir(t, 'write-delay'), 'ms')
  fs.writeFileSync(faultFile, '0')
  process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] = faultFile
  const node = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  delete process.env[FAULT_WRITE_DELAY_MS_FILE_ENV]
  const port = await freePort()
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--api-listen', `127.0.0.1:${port}`] })
  const api = `127.0.0.1:${port}`
  const raw = await rawClient(t, zks)
  const dir = makeTempDir(t, 'tenant-export')
  const admin = async (args: string[]): Promise<string> => await cliOk(t, args, zks)
  await admin(['tenant', 'create', 'acme', '--sites', 'site-a'])
  await admin(['tenant', 'create', 'other'])
  await admin(['disk', 'create', 'o1', '--size', '2M', '--block-size', '1M', '--replicas', '1', '--tenant', 'other'])
  await admin(['snapshot', 'create', 'o1@base'])

  const acmeTls = await identityDir({ role: 'tenant', name: 'acme' })
  const tenantEnv = { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: acmeTls }
  const asAcme = async (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> => await runCli(['--api', api, ...args], { ...tenantEnv, timeoutMs: 60_000 })
  const acmeOk = async (args: string[]): Promise<string> => {
    const r = await asAcme(args)
    t.equal(r.code, 0, `tenant acme: ukai ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  // The whole of a disk as the mount serves it (it appears once the agent saw it).
  const readMount = async (disk: string): Promise<Buffer> => {
    const file = path.join(agent.mountPoint, disk)
    for (let i = 0; i < 50 && !fs.existsSync(file); i++) await sleep(100)
    return fs.readFileSync(file)
  }
  const writeMount = (disk: string, at: number, data: Buffer): void => {
    const fd = fs.openSync(path.join(agent.mountPoint, disk), 'r+')
    try {
      fs.writeSync(fd, data, 0, data.length, at)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  }
  // The CLI as a tenant, its stdout where the test says (a file: the exported bytes).
  const spawnAcme = (args: string[], stdout: 'pipe' | number): ChildProcess => {
    const env = daemonEnv()
    env.UKAI_ZK = tenantEnv.zk
    env.UKAI_ZK_AUTH = tenantEnv.zkAuth
    env.UKAI_TLS_DIR = acmeTls
    const child = spawn(process.execPath, [cliMainPath(), '--api', api, ...args], { env, stdio: ['ignore', stdout, 'pipe'] })
    t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
    return child
  }
  const exitOf = async (child: ChildProcess): Promise<{ code: number, stderr: string }> => {
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    const code = await new Promise<number>(resolve => child.on('close', (c) => resolve(c ?? -1)))
    return { code, stderr }
  }
  const diskNames = async (): Promise<string[]> => (await cliJson<Array<{ name: string }>>(['disk', 'list'], zks)).map(d => d.name).sort()

  // t1: 8 MiB, 1 MiB blocks, written in places (the rest stays holes), snapshot s1; more, s2.
  await acmeOk(['disk', 'create', 't1', '--size', '8M', '--block-size', '1M', '--replicas', '1'])
  await readMount('t1')
  const image = Buffer.alloc(8 * MiB)
  const put = (at: number, data: Buffer): void => { writeMount('t1', at, data); data.copy(image, at) }
  put(0, crypto.randomBytes(MiB))
  put(2 * MiB + 4096, crypto.randomBytes(300_000))
  put(5 * MiB, crypto.randomBytes(2 * MiB))
  const atS1 = Buffer.from(image)
  await acmeOk(['snapshot', 'create', 't1@s1'])
  put(3 * MiB, crypto.randomBytes(MiB))
  put(5 * MiB + 100, Buffer.alloc(MiB))  // zeros over data: an incremental stream carries it
  const atS2 = Buffer.from(image)
  await acmeOk(['snapshot', 'create', 't1@s2'])

  t.test('its own snapshots: raw to a file and to stdout, the bytes as written', async (t) => {
    const file = path.join(dir, 's1.raw')
    const out = JSON.parse(await acmeOk(['export', 't1@s1', file, '--json'])) as { disk: string, snapshot: string, kind: string, sizeBytes: number, dataBytes: number }
    t.match(out, { disk: 't1', snapshot: 's1', kind: 'full', sizeBytes: 8 * MiB }, 'the --json summary of the admin path')
    t.equal(sha(fs.readFileSync(file)), sha(atS1), 'the raw file equals s1 as written through the mount (sha256)')
    t.ok(fs.statSync(file).blocks * 512 < 8 * MiB, 'the raw file keeps the holes (sparse)')
    const captured = path.join(dir, 'stdout.raw')
    const fd = fs.openSync(captured, 'w')
    const stdout = await exitOf(spawnAcme(['export', 't1@s2', '-'], fd))
    fs.closeSync(fd)
    t.equal(stdout.code, 0, stdout.stderr)
    t.equal(sha(fs.readFileSync(captured)), sha(atS2), 'raw to stdout equals s2 (sha256)')
    t.match(stdout.stderr, /exported t1@s2 \(raw image\): .* written to stdout/, 'the summary goes to stderr when stdout carries the data')
  })

  t.test('a full stream and an incremental one import back as the disk was', async (t) => {
    const full = path.join(dir, 's1.ukai')
    const incr = path.join(dir, 's1-s2.ukai')
    await acmeOk(['export', 't1@s1', full, '--format', 'stream'])
    const inc = JSON.parse(await acmeOk(['export', '--from', 's1', 't1@s2', incr, '--json'])) as { kind: string, from: string }
    t.match(inc, { kind: 'incremental', from: 's1' })
    const imported = JSON.parse(await acmeOk(['import', full, 't2', '--replicas', '1', '--json'])) as { created: boolean, snapshot: string }
    t.match(imported, { created: true, snapshot: 's1' })
    t.equal(sha(await readMount('t2')), sha(atS1), 't2 from the full stream reads as s1')
    await acmeOk(['import', '--incremental', incr, 't2'])
    t.equal(sha(await readMount('t2')), sha(atS2), 'and after the incremental one as s2')
    t.equal((await cliJson<{ tenant: string }>(['disk', 'info', 't2'], zks)).tenant, 'acme', 'created in the caller\'s tenant')
  })

  t.test('a raw image imports into its tenant and reads back byte for byte', async (t) => {
    const img = Buffer.alloc(4 * MiB)
    crypto.randomBytes(MiB).copy(img, MiB)
    crypto.randomBytes(512 * 1024).copy(img, 3 * MiB)
    const file = path.join(dir, 'img.raw')
    fs.writeFileSync(file, img)
    const out = await acmeOk(['import', file, 'i1', '--block-size', '1M', '--replicas', '1'])
    t.match(out, /created i1 \(4\.00 MiB\) from a raw image/)
    const back = await readMount('i1')
    t.equal(back.length, img.length)
    t.ok(back.equals(img), 'read back through the mount byte for byte')
    const info = await cliJson<{ tenant: string, replicasPerNode: Record<string, unknown> }>(['disk', 'info', 'i1'], zks)
    t.equal(info.tenant, 'acme')
    t.same(Object.keys(info.replicasPerNode), ['a1'], 'at the tenant\'s allowed site')
  })

  t.test('an import\'s progress counts what the agent applied, not what was sent', async (t) => {
    const blocks = 32
    const img = crypto.randomBytes(blocks * MiB)  // no zero grain: every MiB is one block written
    const file = path.join(dir, 'progress.raw')
    fs.writeFileSync(file, img)
    const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
    t.teardown(async () => { await meta.close() })
    const files = openTlsDir(acmeTls)
    const client = new TenantApiClient(api, files)
    t.teardown(() => { client.close(); files.close() })
    fs.writeFileSync(faultFile, '300')  // each write answered 300 ms late: the apply takes seconds
    t.teardown(() => { fs.writeFileSync(faultFile, '0') })
    const events: Array<{ kind: 'sent' | 'start' | 'applied', bytes: number, onNode?: number }> = []
    let uuid = ''
    const summary = await client.importFrom<{ sizeBytes: number, inputBytes: number }>(
      { disk: 'p1', incremental: false, format: 'raw', site: '', blockSizeBytes: MiB, replicas: 1, tenant: '', input: file },
      Readable.from((async function * () { for (let at = 0; at < img.length; at += 4 * MiB) yield img.subarray(at, at + 4 * MiB) })()),
      {
        onSent: (n) => events.push({ kind: 'sent', bytes: n }),
        onStart: (n) => {
          events.push({ kind: 'start', bytes: n })
          meta.getDisk('p1').then(d => { uuid = d.uuid }, () => {})  // created just before the start report
        },
        // What the node stores at the moment the agent's report arrives: the agent's engine keeps
        // at most 8 writes of 1 MiB in flight, so it cannot have applied more than that beyond it.
        onProgress: (n) => events.push({ kind: 'applied', bytes: n, onNode: uuid === '' ? -1 : versionFiles(node.dataDir, uuid).length })
      })
    t.equal(summary.sizeBytes, img.length)
    const sent = events.filter(e => e.kind === 'sent')
    const applied = events.filter(e => e.kind === 'applied')
    const startAt = events.findIndex(e => e.kind === 'start')
    t.equal(sent[sent.length - 1].bytes, img.length, 'every byte sent')
    t.ok(startAt > events.lastIndexOf(sent[sent.length - 1]), 'the agent starts applying (and reporting) only once it has the whole input')
    t.equal(events[startAt].bytes, img.length, 'the total the bar counts to: the bytes to apply')
    t.ok(applied.length >= 2, `several reports while it applied (${applied.length})`)
    for (let i = 1; i < applied.length; i++) t.ok(applied[i].bytes >= applied[i - 1].bytes, 'applied bytes never go back')
    t.ok(applied.every(e => e.bytes <= img.length), 'never past the total')
    t.equal(applied[applied.length - 1].bytes, img.length, 'the last report: everything applied')
    t.ok(applied.some(e => e.bytes < img.length), 'reports before the end show less than the total (not the bytes sent)')
    const checked = applied.filter(e => (e.onNode ?? -1) >= 0)
    t.ok(checked.length >= 1, `reports checked against the node's files (${checked.length})`)
    for (const e of checked) t.ok(e.bytes <= ((e.onNode as number) + 8) * MiB, `reported ${e.bytes / MiB} MiB applied with ${e.onNode} MiB on the node and at most 8 in flight`)
    t.same((await readMount('p1')).equals(img), true, 'read back byte for byte')
    // The CLI: the same through its --json (the applied bytes it was told last).
    fs.writeFileSync(faultFile, '0')
    const out = JSON.parse(await acmeOk(['import', file, 'p2', '--block-size', '1M', '--replicas', '1', '--json'])) as { appliedBytes: number, sizeBytes: number }
    t.equal(out.appliedBytes, img.length, 'ukai import --json: the agent applied every byte')
  })

  t.test('another tenant\'s disk: refused, naming the disk, nothing read or written', async (t) => {
    const before = await metaTree(raw)
    const target = path.join(dir, 'keep.raw')
    fs.writeFileSync(target, 'mine')
    const exp = await asAcme(['export', 'o1@base', target])
    t.equal(exp.code, 1)
    t.match(exp.stderr, /tenant acme may not export disk 'o1': it belongs to another tenant/)
    t.equal(fs.readFileSync(target, 'utf8'), 'mine', 'the output file is untouched')
    const stream = path.join(dir, 's1.ukai')
    const cases: Array<{ args: string[], why: RegExp }> = [
      { args: ['import', stream, 'o1'], why: /tenant acme may not import into disk 'o1': it belongs to another tenant/ },
      { args: ['import', '--incremental', path.join(dir, 's1-s2.ukai'), 'o1'], why: /tenant acme may not import into disk 'o1': it belongs to another tenant/ },
      { args: ['import', stream, 'x1', '--tenant', 'other'], why: /tenant acme may not import into disk 'x1' in tenant 'other'/ },
      { args: ['import', stream, 'x2', '--site', 'site-b'], why: /tenant acme may not import into disk 'x2' at site 'site-b' \(allowed: site-a\)/ }
    ]
    for (const c of cases) {
      const r = await asAcme(c.args)
      t.equal(r.code, 1, `${c.args.join(' ')}: non-zero exit`)
      t.match(r.stderr, c.why, `${c.args.join(' ')}: refused with the reason`)
    }
    const json = await asAcme(['export', 'o1@base', '-', '--json'])
    t.match(json.stderr, /"code":"PERMISSION_DENIED"/)
    t.same(await metaTree(raw), before, 'ZooKeeper unchanged (disks, snapshots, ledgers)')
  })

  t.test('an import past the capacity quota is refused with the trees unchanged', async (t) => {
    // Used: t1 8M + t2 8M + i1 4M = 20M; room for 4M more.
    await admin(['tenant', 'quota', 'acme', '--capacity', '24M'])
    const file = path.join(dir, 'big.raw')
    fs.writeFileSync(file, crypto.randomBytes(5 * MiB))
    const before = await metaTree(raw)
    const r = await asAcme(['import', file, 'q1', '--block-size', '1M', '--replicas', '1'])
    t.equal(r.code, 1)
    t.match(r.stderr, /creating disk 'q1' refused: tenant 'acme' would exceed its capacity quota of 24\.0 MiB/)
    t.same(await metaTree(raw), before, 'nothing changed in ZooKeeper')
    t.notOk((await diskNames()).includes('q1'))
    await admin(['tenant', 'quota', 'acme', '--capacity', 'none'])
  })

  t.test('an import whose CLI is killed mid-stream leaves nothing', async (t) => {
    const fifo = path.join(dir, 'slow.fifo')
    execFileSync('mkfifo', [fifo])
    const before = await metaTree(raw)
    const child = spawnAcme(['import', fifo, 'ab1', '--block-size', '1M', '--replicas', '1'], 'pipe')
    const exited = exitOf(child)
    const writer = await fs.promises.open(fifo, 'w')  // returns once the CLI opened it
    try {
      await writer.write(crypto.randomBytes(3 * MiB))
      await sleep(1500)  // the agent spools what came; the input has no end yet
      t.ok(child.pid !== undefined && child.exitCode === null, 'the import is still running')
      process.kill(child.pid as number, 'SIGKILL')
      await exited
    } finally {
      await writer.close().catch(() => {})
    }
    // The agent saw the stream stop without its end and refused it.
    let log = ''
    for (let i = 0; i < 50 && !/stopped before its end/.test(log); i++) { await sleep(200); log = fs.readFileSync(agent.logFile, 'utf8') }
    t.match(log, /the import of '[^']*slow\.fifo' into disk 'ab1' stopped before its end/, 'the agent refused the aborted stream')
    t.same(await metaTree(raw), before, 'nothing changed in ZooKeeper')
    t.notOk((await diskNames()).includes('ab1'), 'no disk ab1')
  })

  t.test('an export whose reader stalls holds the agent back; killed, the agent lets go', async (t) => {
    // 128 MiB of data: more than the agent's prefetch (32 MiB) plus what the stream holds in
    // flight (16 MiB window, 16 messages each side), so a CLI whose stdout nobody reads stops
    // the agent mid-export instead of the agent running ahead.
    await acmeOk(['disk', 'create', 'big', '--size', '128M', '--block-size', '4M', '--replicas', '1'])
    await readMount('big')
    const chunk = crypto.randomBytes(4 * MiB)
    // Asynchronously: a synchronous 128 MiB would stall this process's ZooKeeper sessions.
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'big'), 'r+')
    try {
      for (let i = 0; i < 32; i++) await fh.write(chunk, 0, chunk.length, i * 4 * MiB)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await acmeOk(['snapshot', 'create', 'big@s'])
    const child = spawnAcme(['export', 'big@s', '-'], 'pipe')  // its stdout is never read
    const exited = exitOf(child)
    const logged = (): string => fs.readFileSync(agent.logFile, 'utf8')
    await sleep(3000)
    t.equal(child.exitCode, null, 'the export is still waiting on its reader')
    t.notMatch(logged(), /"method":"Export"[^\n]*"disk":"big"[^\n]*"msg":"tenant API call"/, 'the agent has not finished it')
    process.kill(child.pid as number, 'SIGKILL')
    await exited
    let log = ''
    for (let i = 0; i < 50 && !/went away during the export|export stream closed early/.test(log); i++) { await sleep(200); log = logged() }
    t.match(log, /the client went away during the export|the export stream closed early/, 'the agent stopped the export')
    const file = path.join(dir, 'big.raw')
    await acmeOk(['export', 'big@s', file])
    t.equal(fs.statSync(file).size, 128 * MiB, 'and serves the next one')
  })

  t.test('a lease holder\'s snapshot commit refuses a tenant at its snapshots quota', async (t) => {
    // A quota of what acme has now (s1, s2 of t1 and of t2, …): it is full.
    const has = (await cliJson<{ usage: { snapshots: number } }>(['tenant', 'info', 'acme'], zks)).usage.snapshots
    t.ok(has >= 4)
    await admin(['tenant', 'quota', 'acme', '--snapshots', String(has)])
    const meta = await MetaStore.connect(zks, { auth: processZkAuth() })
    t.teardown(async () => await meta.close())
    // Written through the mount: the agent holds t1's lease, so a snapshot request is its to commit.
    const fd = fs.openSync(path.join(agent.mountPoint, 't1'), 'r+')
    t.teardown(() => fs.closeSync(fd))
    fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, 7 * MiB)
    fs.fsyncSync(fd)
    t.equal((await meta.getLease('t1'))?.host, 'hv-a', 'the agent holds the lease')
    const before = await metaTree(raw)
    // The request as the admin path leaves it, without its early check: the holder's commit is
    // the one that must refuse (its ledger check in the same transaction).
    await meta.createSnapshotRequest('t1', { v: 1, snapshot: 'over', host: 'test', requestedAtMs: Date.now() })
    let req = await meta.getSnapshotRequest('t1')
    for (let i = 0; i < 100 && req?.error === undefined; i++) { await sleep(100); req = await meta.getSnapshotRequest('t1') }
    t.equal(req?.errorCode, 'QUOTA_EXCEEDED', 'the holder answered QUOTA_EXCEEDED')
    t.match(req?.error, /snapshot t1@over refused: tenant 'acme' would exceed its snapshots quota of \d+ \(it has \d+\)/)
    await meta.removeSnapshotRequest('t1')
    t.same(await metaTree(raw), before, 'no snapshot, the epoch and the ledger as before')
    t.same((await meta.listSnapshots('t1')).map(s => s.name), ['s1', 's2'])
  })
})
