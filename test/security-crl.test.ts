// Revocation as a CA-signed CRL published in ZooKeeper (issue 12, docs/security.md "Revocation"):
// `ukai cert revoke` (the real CLI) signs the CA's next CRL and publishes it; a storage node and an
// agent's tenant API on "another host" (TLS dirs the CLI never copied into) refuse the revoked
// certificate within seconds. A forged CRL (another CA's) and an older genuine one, written to the
// znode and to the node's own crl.pem, are refused and logged, and the list in force stays —
// also across a restart (the node persisted the highest CRL number it accepted). Bad input:
// an unknown serial or identity is refused, nothing signed or published. An offline CA signs with
// --no-publish, and `ukai cert publish-crl` publishes it.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { freePort } from '../src/dev/free-port'
import { publishCrlRecord, readCrlRecord } from '../src/meta/crl-record'
import { MetaStore } from '../src/meta/store'
import { initCa, issueCert } from '../src/security/ca'
import { issueCrl } from '../src/security/crl'
import { StorageClient } from '../src/storagenode/client'
import { CRL_FILE, CRL_NUMBER_FILE } from '../src/storagenode/crl'
import { openTlsDir } from '../src/storagenode/tls'
import type { Identity } from '../src/storagenode/identity'
import { makeTempDir, startAgent, startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { versionFiles } from './helpers/node-files'
import { identityDir, testCa } from './helpers/tls'
import { untilValue } from './helpers/until'

const KiB = 1024
const REFUSED_WITHIN_MS = 5000
const uuid = (): string => crypto.randomUUID()
const block = (fill: number): Buffer => Buffer.alloc(4 * KiB, fill)

// A certificate dir the CA does not know the place of: issued, copied elsewhere, the original
// removed (issued.txt names a dir that is gone, so `cert revoke` copies nothing into this one).
async function remoteIdentity (t: Parameters<typeof makeTempDir>[0], caDir: string, id: Identity): Promise<string> {
  const issued = await issueCert(caDir, id, { outDir: path.join(makeTempDir(t, 'issued-elsewhere'), 'tls') })
  const remote = path.join(makeTempDir(t, `remote-host-${id.name}`), 'tls')
  fs.mkdirSync(remote, { mode: 0o700 })
  for (const f of ['ca.crt', 'tls.crt', 'tls.key']) fs.copyFileSync(path.join(issued.dir, f), path.join(remote, f))
  fs.rmSync(issued.dir, { recursive: true })
  return remote
}

type Tap = { equal: (found: unknown, wanted: unknown, msg: string) => unknown }
const logLines = (file: string, re: RegExp): string[] => fs.readFileSync(file, 'utf8').split('\n').filter(l => re.test(l))

t.test('revocation: a CA-signed CRL through ZooKeeper', async (t) => {
  const caDir = await testCa()
  const zk = await startZk(t)
  const farTls = await remoteIdentity(t, caDir, { role: 'node', name: 'far1' })
  const node = await startNode(t, { zk, id: 'far1', site: 'site-a', tlsDir: farTls })
  const apiPort = await freePort()
  const agentTls = await remoteIdentity(t, caDir, { role: 'agent', name: 'far-hv' })
  await startAgent(t, { zk, host: 'far-hv', site: 'site-a', tlsDir: agentTls, extraArgs: ['--api-listen', `127.0.0.1:${apiPort}`] })
  const meta = await MetaStore.connect(zk.connectString, { auth: processZkAuth() })
  t.teardown(async () => { await meta.close() })
  const clients: StorageClient[] = []
  t.teardown(async () => { for (const c of clients) await c.close() })
  const clientAs = (dir: string): StorageClient => {
    const c = new StorageClient({ nodeId: 'far1', address: node.address, callTimeoutMs: 5000, tls: { kind: 'tls', files: openTlsDir(dir) } })
    clients.push(c)
    return c
  }
  const refusedNow = async (c: StorageClient): Promise<boolean> => await c.stat().then(() => false, (e: { code?: string }) => e.code === 'PERMISSION_DENIED')
  const noTrace = (what: string, disk: string): void => {
    t.same(versionFiles(node.dataDir, disk), [], `${what}: no block version on the node`)
    t.notOk(fs.existsSync(path.join(node.dataDir, 'disks', disk)), `${what}: no directory made for the disk`)
  }
  const znodeNumber = async (): Promise<number | null> => (await readCrlRecord(meta))?.rec?.crlNumber ?? null
  const caNumber = (): string => fs.existsSync(path.join(caDir, CRL_NUMBER_FILE)) ? fs.readFileSync(path.join(caDir, CRL_NUMBER_FILE), 'utf8').trim() : 'none'
  const nodeNumber = (): string => fs.readFileSync(path.join(farTls, CRL_NUMBER_FILE), 'utf8').trim()
  const revoke = async (t: Tap, args: string[]): Promise<{ crlNumber: number, serials: string[], published: string, copiedTo: string[] }> => {
    const r = await runCli(['cert', 'revoke', '--ca', caDir, ...args, '--json'], { zk: zk.connectString })
    t.equal(r.code, 0, `ukai cert revoke ${args.join(' ')}: ${r.stderr}`)
    return JSON.parse(r.stdout)
  }

  const victimDir = await identityDir({ role: 'agent', name: 'crl-stolen' })
  const victim = clientAs(victimDir)
  const victim2Dir = await identityDir({ role: 'agent', name: 'crl-stolen-2' })
  const victim2 = clientAs(victim2Dir)
  const bystander = clientAs(await identityDir({ role: 'agent', name: 'crl-honest' }))
  let firstCrl = ''

  await t.test('bad input: an unknown serial or identity is refused, nothing signed or published', async (t) => {
    const before = { ca: caNumber(), znode: await znodeNumber() }
    const unknown = await runCli(['cert', 'revoke', '--ca', caDir, 'deadbeef0123'], { zk: zk.connectString })
    t.not(unknown.code, 0, 'non-zero exit')
    t.match(unknown.stderr, /serial deadbeef0123 was not issued by the CA in .*nothing revoked/)
    const nobody = await runCli(['cert', 'revoke', '--ca', caDir, '--agent', 'nobody-here'], { zk: zk.connectString })
    t.not(nobody.code, 0, 'non-zero exit')
    t.match(nobody.stderr, /issued no certificate to agent nobody-here/)
    const otherCa = makeTempDir(t, 'other-ca-cert')
    await initCa(path.join(otherCa, 'ca'))
    const foreign = await issueCert(path.join(otherCa, 'ca'), { role: 'agent', name: 'crl-stolen' })
    const wrongCa = await runCli(['cert', 'revoke', '--ca', caDir, '--cert', path.join(foreign.dir, 'tls.crt')], { zk: zk.connectString })
    t.not(wrongCa.code, 0)
    t.match(wrongCa.stderr, /was not issued by the CA in/)
    const both = await runCli(['cert', 'revoke', '--ca', caDir, 'abc', '--agent', 'x'], { zk: zk.connectString })
    t.equal(both.code, 2, 'two ways at once: a usage error')
    t.same({ ca: caNumber(), znode: await znodeNumber() }, before, 'no CRL signed, none published')
  })

  await t.test('revoked with the CLI: refused on another host within seconds', async (t) => {
    const before = uuid()
    await victim.write({ diskUuid: before, block: 0, epoch: 1, offset: 0, data: block(1), leaseEpoch: 1 })
    t.equal(versionFiles(node.dataDir, before).length, 1, 'written while valid')
    const r = await revoke(t, ['--cert', path.join(victimDir, 'tls.crt')])
    const start = Date.now()
    t.equal(r.crlNumber, 1, 'the first CRL: number 1')
    t.equal(r.published, 'published')
    t.notOk(r.copiedTo.some(d => d.startsWith(path.dirname(farTls)) || d.startsWith(path.dirname(agentTls))), 'nothing copied into the far TLS dirs')
    t.notOk(fs.existsSync(path.join(farTls, 'revoked.txt')), 'no plain list there either')
    await untilValue('the far node refuses the revoked certificate', async () => (await refusedNow(victim)) ? true : undefined, REFUSED_WITHIN_MS, 100)
    t.pass(`refused ${Date.now() - start} ms after the CLI returned`)
    const disk = uuid()
    const err = await victim.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(2), leaseEpoch: 1 }).then(() => new Error('written'), (e: Error) => e) as Error & { code?: string }
    t.equal(err.code, 'PERMISSION_DENIED', `on the stream opened before: ${err.message}`)
    await t.rejects(victim.fence({ diskUuid: disk, leaseEpoch: 9 }), { code: 'PERMISSION_DENIED', message: /agent crl-stolen .*revoked/ })
    noTrace('revoked', disk)
    t.equal((await bystander.stat()).nodeId, 'far1', 'another agent certificate still works')
    t.equal(nodeNumber(), '1', 'the node persisted the CRL number it accepted')
    t.ok(fs.readFileSync(path.join(farTls, CRL_FILE), 'utf8').includes('BEGIN X509 CRL'), 'and the CRL itself, in its own TLS dir')
    firstCrl = fs.readFileSync(path.join(caDir, CRL_FILE), 'utf8')
    const list = await runCli(['cert', 'list', '--ca', caDir, '--json'])
    const listed = JSON.parse(list.stdout) as { crlNumber: number, certificates: Array<{ name: string, revoked: boolean }> }
    t.equal(listed.crlNumber, 1, 'cert list shows the CRL number')
    t.ok(listed.certificates.find(c => c.name === 'crl-stolen')?.revoked, 'and that the certificate is revoked')
    t.notOk(listed.certificates.find(c => c.name === 'crl-honest')?.revoked)
  })

  await t.test('the agent\'s tenant API on another host refuses a revoked tenant', async (t) => {
    const tenantDir = await identityDir({ role: 'tenant', name: 'crl-tenant' })
    const list = async (): Promise<{ code: number, stderr: string }> => await runCli(['--api', `127.0.0.1:${apiPort}`, 'disk', 'list', '--json'], { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: tenantDir })
    t.equal((await list()).code, 0, 'accepted before')
    await revoke(t, ['--tenant', 'crl-tenant'])
    const last = await untilValue('the far agent refuses the tenant', async () => { const r = await list(); return r.code !== 0 ? r : undefined }, REFUSED_WITHIN_MS + 5000, 200)
    t.match(last.stderr, /tenant API: ListDisks refused: the certificate of tenant crl-tenant is revoked/)
  })

  await t.test('a forged CRL (another CA) in ZooKeeper and in the file: refused, logged, the list stays', async (t) => {
    const other = makeTempDir(t, 'forger')
    await initCa(path.join(other, 'ca'))  // same subject as the cluster CA: only the key differs
    const forged = await issueCrl(path.join(other, 'ca'), [], { published: { number: 100, serials: new Set() } })  // un-revokes everyone
    const numberBefore = nodeNumber()
    await publishCrlRecord(meta, { crlNumber: forged.number, pem: forged.pem }, async () => null)
    fs.writeFileSync(path.join(farTls, CRL_FILE), forged.pem)
    await untilValue('the node logged both refusals', async () => {
      const lines = logLines(node.logFile, /CRL refused: the CRL's signature does not verify/)
      return lines.some(l => l.includes('"source":"ZooKeeper"')) && lines.some(l => l.includes('"source":"file ')) ? true : undefined
    }, REFUSED_WITHIN_MS, 100)
    t.ok(await refusedNow(victim), 'the revoked certificate is still refused')
    t.equal((await bystander.stat()).nodeId, 'far1', 'others still served')
    t.equal(nodeNumber(), numberBefore, 'the persisted CRL number is unchanged')
    const disk = uuid()
    await t.rejects(victim.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(3), leaseEpoch: 1 }), { code: 'PERMISSION_DENIED' })
    noTrace('revoked, after the forgery', disk)
  })

  await t.test('an older genuine CRL is refused, in ZooKeeper, after a restart, and in the file', async (t) => {
    const r = await revoke(t, ['--cert', path.join(victim2Dir, 'tls.crt')])
    t.equal(r.crlNumber, 3, 'numbered above the last (2: the tenant\'s)')
    t.equal(r.published, 'published', 'published over the forged record (not this CA\'s)')
    await untilValue('the node refuses the second victim', async () => (await refusedNow(victim2)) ? true : undefined, REFUSED_WITHIN_MS, 100)
    t.equal(nodeNumber(), '3')
    // Someone with the ZooKeeper credentials puts CRL number 1 back (it does not revoke victim2).
    await publishCrlRecord(meta, { crlNumber: 1, pem: firstCrl }, async () => null)
    const rollback = /CRL refused: its CRL number 1 is lower than 3/
    await untilValue('the node logged the refusal', async () => logLines(node.logFile, rollback).length > 0 ? true : undefined, REFUSED_WITHIN_MS, 100)
    t.ok(await refusedNow(victim2), 'victim2 is still refused')
    // A restart: the node starts from the CRL it persisted, and ZooKeeper's older one is refused.
    await node.restart()
    t.ok(await refusedNow(victim2), 'after a restart, still refused')
    t.ok(await refusedNow(victim), 'and so is the first')
    await untilValue('the restarted node logged the refusal', async () => logLines(node.logFile, rollback).some(l => l.includes('"source":"ZooKeeper"')) ? true : undefined, REFUSED_WITHIN_MS, 100)
    // The same older list in the node's own file.
    fs.writeFileSync(path.join(farTls, CRL_FILE), firstCrl)
    await untilValue('the file\'s older CRL logged', async () => logLines(node.logFile, rollback).some(l => l.includes('"source":"file ')) ? true : undefined, REFUSED_WITHIN_MS, 100)
    t.ok(await refusedNow(victim2), 'still refused')
    t.equal(nodeNumber(), '3', 'the persisted number stays 3')
    t.equal((await bystander.stat()).nodeId, 'far1', 'others still served')
    // Revoking again publishes a CRL above ZooKeeper's, with the rolled-back serials kept.
    const again = await revoke(t, ['--cert', path.join(victim2Dir, 'tls.crt')])
    t.equal(again.crlNumber, 3, 'already revoked: no new CRL')
    t.equal(again.published, 'published', 'the CA\'s current CRL goes back into ZooKeeper')
    t.equal(await znodeNumber(), 3)
  })

  await t.test('an offline CA: revoke --no-publish, then publish-crl', async (t) => {
    const thirdDir = await identityDir({ role: 'agent', name: 'crl-stolen-3' })
    const third = clientAs(thirdDir)
    t.equal((await third.stat()).nodeId, 'far1', 'accepted before')
    const before = await znodeNumber()
    const r = await revoke(t, ['--cert', path.join(thirdDir, 'tls.crt'), '--no-publish'])
    t.equal(r.published, false)
    t.equal(r.crlNumber, (before ?? 0) + 1, 'a new CRL in the CA dir')
    t.equal(await znodeNumber(), before, 'nothing published')
    const pub = await runCli(['cert', 'publish-crl', '--ca', caDir, '--json'], { zk: zk.connectString })
    t.equal(pub.code, 0, pub.stderr)
    t.match(JSON.parse(pub.stdout), { crlNumber: r.crlNumber, published: 'published' })
    t.equal(await znodeNumber(), r.crlNumber, 'now in ZooKeeper')
    await untilValue('the far node refuses the third certificate', async () => (await refusedNow(third)) ? true : undefined, REFUSED_WITHIN_MS, 100)
    const again = await runCli(['cert', 'publish-crl', '--ca', caDir, '--json'], { zk: zk.connectString })
    t.match(JSON.parse(again.stdout), { published: 'same' }, 'publishing the same CRL again changes nothing')
  })
})
