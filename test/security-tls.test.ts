// Mutual TLS and authorization on the storage nodes (issue 12, docs/security.md): real storage
// node processes with certificates of a test CA. Every refused caller is checked on the node's
// files too: nothing written, no directory made. Also the node-side findings of the fault probe:
// the fence bound, copies only from registered peers, the data dir's modes.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import t from 'tap'
import { initCa, issueCert } from '../src/security/ca'
import { revokeCert } from '../src/security/crl'
import { StorageClient } from '../src/storagenode/client'
import { FENCE_STEP_MAX } from '../src/storagenode/fencing'
import { openTlsDir } from '../src/storagenode/tls'
import { makeTempDir, startNode, startZk } from './helpers/cluster'
import { versionFiles } from './helpers/node-files'
import { identityDir, testCa } from './helpers/tls'
import { runCli } from './helpers/cli'
import { untilValue } from './helpers/until'

const KiB = 1024
const uuid = (): string => crypto.randomUUID()
const block = (fill: number): Buffer => Buffer.alloc(4 * KiB, fill)

t.test('storage node: who may call what', async (t) => {
  const caDir = await testCa()
  const zk = await startZk(t)
  const a1 = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
  const clients: StorageClient[] = []
  t.teardown(async () => { for (const c of clients) await c.close() })
  const clientAs = (dir: string | 'insecure', opts: { callTimeoutMs?: number } = {}): StorageClient => {
    const c = new StorageClient({ nodeId: 'a1', address: a1.address, callTimeoutMs: opts.callTimeoutMs ?? 5000, tls: dir === 'insecure' ? { kind: 'insecure' } : { kind: 'tls', files: openTlsDir(dir) } })
    clients.push(c)
    return c
  }
  const noTrace = (what: string, disk: string): void => {
    t.same(versionFiles(a1.dataDir, disk), [], `${what}: no block version on the node`)
    t.notOk(fs.existsSync(path.join(a1.dataDir, 'disks', disk)), `${what}: no directory made for the disk`)
  }

  const agentDir = await identityDir({ role: 'agent', name: 'hv-a' })
  const agent = clientAs(agentDir)
  const adminDir = await identityDir({ role: 'admin', name: 'test' })
  const admin = clientAs(adminDir)

  await t.test('an agent writes; the data dir is the node user\'s only', async (t) => {
    const disk = uuid()
    await agent.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(1), leaseEpoch: 1 })
    await agent.flush({ diskUuid: disk, leaseEpoch: 1 })
    t.same(await agent.read({ diskUuid: disk, block: 0, epoch: 1, offset: 0, length: 4 * KiB }), block(1), 'read back')
    const mode = (p: string): string => (fs.statSync(p).mode & 0o777).toString(8)
    t.equal(mode(a1.dataDir), '700', 'data dir 0700')
    t.equal(mode(path.join(a1.dataDir, 'disks')), '700', 'disks dir 0700')
    t.equal(mode(path.join(a1.dataDir, 'disks', disk)), '700', 'disk dir 0700')
    const files = fs.readdirSync(path.join(a1.dataDir, 'disks', disk))
    t.ok(files.length >= 2, `block and fence files: ${files.join(' ')}`)
    for (const f of files) t.equal(mode(path.join(a1.dataDir, 'disks', disk, f)), '600', `${f} 0600`)
  })

  await t.test('an insecure client is refused at the handshake', async (t) => {
    const disk = uuid()
    const c = clientAs('insecure')
    await t.rejects(c.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(2), leaseEpoch: 1 }), { code: 'UNAVAILABLE' })
    await t.rejects(c.fence({ diskUuid: disk, leaseEpoch: 5 }), { code: 'UNAVAILABLE', message: /TLS|connect|socket/i })
    noTrace('insecure', disk)
  })

  await t.test('a certificate of another CA is refused at the handshake', async (t) => {
    const other = makeTempDir(t, 'other-ca')
    await initCa(path.join(other, 'ca'))
    const rogue = await issueCert(path.join(other, 'ca'), { role: 'admin', name: 'test' })
    const c = clientAs(rogue.dir)
    const disk = uuid()
    await t.rejects(c.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(3), leaseEpoch: 1 }), { code: 'UNAVAILABLE' })
    await t.rejects(c.deleteDisk({ diskUuid: disk }), { code: 'UNAVAILABLE' })
    noTrace('other CA', disk)
  })

  await t.test('an expired certificate is refused at the handshake', async (t) => {
    const day = 86_400_000
    const expired = await issueCert(caDir, { role: 'agent', name: 'expired' }, { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) })
    const c = clientAs(expired.dir)
    const disk = uuid()
    await t.rejects(c.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(4), leaseEpoch: 1 }), { code: 'UNAVAILABLE' })
    noTrace('expired', disk)
  })

  await t.test('a revoked certificate is refused, also on the stream it already had open', async (t) => {
    const victim = await issueCert(caDir, { role: 'agent', name: 'stolen' })
    const c = clientAs(victim.dir)
    const before = uuid()
    await c.write({ diskUuid: before, block: 0, epoch: 1, offset: 0, data: block(5), leaseEpoch: 1 })
    t.equal(versionFiles(a1.dataDir, before).length, 1, 'written while valid')
    const r = await revokeCert(caDir, { certFile: path.join(victim.dir, 'tls.crt') })
    t.same(r.serials, [victim.serial], 'revoked by its certificate file')
    t.ok(r.copiedTo.some((d: string) => fs.realpathSync(d) === fs.realpathSync(path.join(a1.dir, '..')) || d.endsWith('node-a1')), 'the list reached the node\'s TLS dir')
    await untilValue('the node reloaded its revocation list', async () => {
      try {
        await c.stat()
        return undefined
      } catch (e) { return (e as { code: string }).code === 'PERMISSION_DENIED' ? true : undefined }
    }, 5000, 100)
    const disk = uuid()
    // On the Io stream opened before the revocation.
    const err = await c.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(6), leaseEpoch: 1 }).then(() => new Error('written'), (e: Error) => e) as Error & { code?: string }
    t.equal(err.code, 'PERMISSION_DENIED', `refused: ${err.message}`)
    t.match(err.message, /revoked/, 'the message says why')
    await t.rejects(c.fence({ diskUuid: disk, leaseEpoch: 7 }), { code: 'PERMISSION_DENIED', message: /agent stolen.*revoked/ })
    noTrace('revoked', disk)
  })

  await t.test('deletes: an agent without the lease is refused, an admin is not', async (t) => {
    const disk = uuid()
    await agent.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(7), leaseEpoch: 3 })
    await t.rejects(agent.deleteDisk({ diskUuid: disk }), { code: 'PERMISSION_DENIED', message: /DeleteDisk refused: agent hv-a/ })
    await t.rejects(agent.deleteBlocks({ diskUuid: disk, blocks: [0] }), { code: 'PERMISSION_DENIED', message: /DeleteBlocks refused: agent hv-a may not call it/ })
    await t.rejects(agent.deleteDisk({ diskUuid: disk, leaseEpoch: 2 }), { code: 'FENCED' }, 'under an older lease epoch: fenced')
    t.equal(versionFiles(a1.dataDir, disk).length, 1, 'still on the node')
    const nodeCert = clientAs(await identityDir({ role: 'node', name: 'a2' }))
    await t.rejects(nodeCert.deleteDisk({ diskUuid: disk, leaseEpoch: 3 }), { code: 'PERMISSION_DENIED' }, 'a peer node deletes nothing')
    await admin.deleteDisk({ diskUuid: disk })
    t.same(versionFiles(a1.dataDir, disk), [], 'an admin deletes it')
    const tenant = clientAs(await identityDir({ role: 'tenant', name: 't1' }))
    await t.rejects(tenant.stat(), { code: 'PERMISSION_DENIED', message: /tenant t1 may not call it/ }, 'a tenant certificate calls no node directly')
  })

  await t.test('the fence a node accepts is bounded', async (t) => {
    const disk = uuid()
    await agent.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(8), leaseEpoch: 4 })
    await t.rejects(agent.fence({ diskUuid: disk, leaseEpoch: 2 ** 53 - 1 }), { code: 'BAD_ARGUMENT', message: /no lease hands that out/ })
    await t.rejects(agent.fence({ diskUuid: disk, leaseEpoch: 4 + FENCE_STEP_MAX + 1 }), { code: 'BAD_ARGUMENT' })
    t.equal(await agent.fence({ diskUuid: disk, leaseEpoch: 5 }), 5, 'a real next epoch is taken')
    await agent.write({ diskUuid: disk, block: 0, epoch: 1, offset: 0, data: block(9), leaseEpoch: 5 })
    t.same(await agent.read({ diskUuid: disk, block: 0, epoch: 1, offset: 0, length: 4 * KiB }), block(9), 'the disk stays writable')
  })

  await t.test('copies come only from registered peers at their registered address', async (t) => {
    const disk = uuid()
    await t.rejects(agent.pullBlock({ diskUuid: disk, block: 0, sourceNode: 'zz9', sourceAddress: '127.0.0.1:9', leaseEpoch: 1, probe: false }), { code: 'PERMISSION_DENIED', message: /no storage node 'zz9' is registered/ })
    await t.rejects(agent.pullBlock({ diskUuid: disk, block: 0, sourceNode: 'a2', sourceAddress: '127.0.0.1:9', leaseEpoch: 1, probe: false }), { code: 'PERMISSION_DENIED', message: /registered at .*not 127\.0\.0\.1:9/ })
    await t.rejects(agent.copyBase({ diskUuid: disk, block: 0, epoch: 1, baseUuid: uuid(), baseEpoch: 1, sourceNode: 'a2', sourceAddress: '10.1.2.3:80', leaseEpoch: 1 }), { code: 'PERMISSION_DENIED' })
    noTrace('pull from an unregistered address', disk)
    // The real peer at its real address works, node to node over TLS.
    const c2 = new StorageClient({ nodeId: 'a2', address: a2.address })
    clients.push(c2)
    const src = uuid()
    await c2.write({ diskUuid: src, block: 0, epoch: 1, offset: 0, data: block(10), leaseEpoch: 1 })
    t.equal(await agent.pullBlock({ diskUuid: src, block: 0, sourceNode: 'a2', sourceAddress: a2.address, leaseEpoch: 1, probe: false }), 4 * KiB, 'pulled from a2')
    t.same(await agent.read({ diskUuid: src, block: 0, epoch: 1, offset: 0, length: 4 * KiB }), block(10), 'a1 holds a2\'s bytes')
  })

  await t.test('a client checks the node\'s identity', async (t) => {
    const wrong = new StorageClient({ nodeId: 'a2', address: a1.address, callTimeoutMs: 3000 })  // a1 answering as a2
    clients.push(wrong)
    await t.rejects(wrong.stat(), { code: 'UNAVAILABLE', message: /node a1|a2/ })
  })
})

t.test('certificate rotation under writes: no error, new connections see the new certificates', async (t) => {
  await testCa()
  const zk = await startZk(t)
  const node = await startNode(t, { zk, id: 'r1', site: 'site-a' })
  const nodeDir = await identityDir({ role: 'node', name: 'r1' })
  const agentDir = await identityDir({ role: 'agent', name: 'hv-r' })
  const files = openTlsDir(agentDir)
  const writer = new StorageClient({ nodeId: 'r1', address: node.address, tls: { kind: 'tls', files } })
  t.teardown(async () => { await writer.close(); files.close() })
  const disk = uuid()
  let stop = false
  let writes = 0
  const errors: Error[] = []
  const run = (async () => {
    while (!stop) {
      const b = writes % 64
      try {
        await writer.write({ diskUuid: disk, block: b, epoch: 1, offset: 0, data: block(writes & 0xff), leaseEpoch: 1 })
      } catch (err) { errors.push(err as Error) }
      writes++
    }
  })()
  const serialOf = async (): Promise<string> => await new Promise((resolve, reject) => {
    const [host, port] = node.address.split(':')
    const s = tls.connect({ host, port: Number(port), servername: 'r1.node.ukai', ca: fs.readFileSync(path.join(agentDir, 'ca.crt')), cert: fs.readFileSync(path.join(agentDir, 'tls.crt')), key: fs.readFileSync(path.join(agentDir, 'tls.key')), ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
      const serial = s.getPeerCertificate().serialNumber.toLowerCase().replace(/^0+/, '')
      s.destroy()
      resolve(serial)
    })
    s.on('error', reject)
  })
  const ca = await testCa()
  const oldSerial = await serialOf()
  await new Promise(resolve => setTimeout(resolve, 500))
  const newNode = await issueCert(ca, { role: 'node', name: 'r1' }, { outDir: nodeDir })
  const newAgent = await issueCert(ca, { role: 'agent', name: 'hv-r' }, { outDir: agentDir })
  t.not(newNode.serial, oldSerial, 'a new node certificate')
  await untilValue('the node serves its new certificate', async () => (await serialOf()) === newNode.serial ? true : undefined, 5000, 100)
  await untilValue('the agent loaded its new certificate', async () => files.reloads > 0 ? true : undefined, 5000, 100)
  await new Promise(resolve => setTimeout(resolve, 500))
  stop = true
  await run
  t.same(errors.map(e => e.message), [], `no write failed during the rotation (${writes} writes)`)
  t.ok(writes > 50, `the writer kept writing (${writes})`)
  // A fresh connection with the rotated agent certificate works too.
  const fresh = new StorageClient({ nodeId: 'r1', address: node.address, tls: { kind: 'tls', files: openTlsDir(agentDir) } })
  t.teardown(async () => { await fresh.close() })
  t.equal((await fresh.stat()).nodeId, 'r1', `a new connection with certificate ${newAgent.serial}`)
})

t.test('daemons refuse to start without a certificate of their role', async (t) => {
  await testCa()
  const dir = makeTempDir(t, 'no-cert')
  const args = ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', dir, '--zk', '127.0.0.1:1', '--zk-timeout-ms', '300']
  const none = await runCli(args, { tlsDir: path.join(dir, 'nothing-here') })
  t.equal(none.code, 2, 'no certificate: refused')
  t.match(none.stderr, /storagenode needs a certificate: --tls-dir DIR .*or --insecure/, none.stderr)
  const wrong = await runCli(args, { tlsDir: await identityDir({ role: 'agent', name: 'hv-a' }) })
  t.equal(wrong.code, 2, 'an agent certificate: refused')
  t.match(wrong.stderr, /needs the certificate of node n9, but .* holds that of agent hv-a/, wrong.stderr)
  const mount = await runCli(['mount', path.join(dir, 'mnt'), '--site', 'site-a', '--host', 'hv-z', '--zk', '127.0.0.1:1'], { tlsDir: await identityDir({ role: 'agent', name: 'hv-a' }) })
  t.equal(mount.code, 2, 'an agent certificate of another host: refused')
  t.match(mount.stderr, /needs the certificate of agent hv-z/, mount.stderr)
  t.notOk(fs.existsSync(path.join(dir, 'disks')), 'nothing made in the data dir')
})
