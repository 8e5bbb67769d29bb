// Certificate rotation under I/O through the mount (issue 12): the nodes' and the agent's
// certificates are replaced while a writer runs against the FUSE file; the writer sees no error,
// every byte verifies afterwards, and the nodes serve their new certificates. Reads go over gRPC
// (no --host on the nodes: no short-circuit), so the data path is TLS end to end.
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import t from 'tap'
import { issueCert } from '../src/security/ca'
import { fuseUnavailable, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { cliOk } from './helpers/cli'
import { randomBytes, rng } from './helpers/model'
import { identityDir, testCa } from './helpers/tls'
import { untilValue } from './helpers/until'

const MiB = 1024 * 1024
const SIZE = 16 * MiB
const skip = missingCli('storagenode') ?? fuseUnavailable() ?? undefined

// The serial of the certificate the node at `address` presents to a new connection.
async function servedSerial (address: string, clientDir: string): Promise<string> {
  const [host, port] = address.split(':')
  return await new Promise((resolve, reject) => {
    const read = (f: string): Buffer => fs.readFileSync(path.join(clientDir, f))
    const s = tls.connect({ host, port: Number(port), servername: 'x.node.ukai', ca: read('ca.crt'), cert: read('tls.crt'), key: read('tls.key'), ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
      const serial = s.getPeerCertificate().serialNumber.toLowerCase().replace(/^0+/, '')
      s.destroy()
      resolve(serial)
    })
    s.on('error', reject)
  })
}

t.test('rotating every certificate under writes through the mount', { skip }, async (t) => {
  const ca = await testCa()
  const zkf = await startZk(t)
  const zk = zkf.connectString
  const nodes = await Promise.all(['a1', 'a2'].map(async id => await startNode(t, { zk, id, site: 'site-a' })))
  const agent = await startAgent(t, { zk, host: 'hv-rot', site: 'site-a' })
  await cliOk(t, ['disk', 'create', 'vol', '--size', '16M', '--block-size', '256K', '--nodes', 'a1,a2'], zk)
  const file = path.join(agent.mountPoint, 'vol')
  const model = Buffer.alloc(SIZE)
  const rand = rng(42)
  const errors: string[] = []
  let writes = 0
  let stop = false
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(async () => { await fh.close().catch(() => {}) })
  const writer = (async () => {
    while (!stop) {
      const len = 4096 * (1 + Math.floor(rand() * 32))
      const off = Math.floor(rand() * (SIZE - len) / 4096) * 4096
      const data = randomBytes(rand, len)
      try {
        await fh.write(data, 0, len, off)
        data.copy(model, off)
        if (++writes % 16 === 0) await fh.sync()
      } catch (err) {
        errors.push(`write ${len} at ${off}: ${(err as Error).message}`)
        return
      }
    }
  })()
  const adminDir = await identityDir({ role: 'admin', name: 'test' })
  const before = await Promise.all(nodes.map(async n => await servedSerial(n.address, adminDir)))
  await new Promise(resolve => setTimeout(resolve, 1000))
  const rotated: Array<{ serial: string }> = []
  for (const n of nodes) rotated.push(await issueCert(ca, { role: 'node', name: n.id }, { outDir: await identityDir({ role: 'node', name: n.id }) }))
  await issueCert(ca, { role: 'agent', name: 'hv-rot' }, { outDir: await identityDir({ role: 'agent', name: 'hv-rot' }) })
  for (const [i, n] of nodes.entries()) {
    t.not(rotated[i].serial, before[i], `${n.id}: a new certificate`)
    await untilValue(`${n.id} serves its new certificate`, async () => (await servedSerial(n.address, adminDir)) === rotated[i].serial ? true : undefined, 10_000, 200)
  }
  await new Promise(resolve => setTimeout(resolve, 1500))
  stop = true
  await writer
  t.same(errors, [], `the writer saw no error (${writes} writes)`)
  t.ok(writes > 20, `it kept writing through the rotation (${writes})`)
  await fh.sync()
  const back = await fs.promises.readFile(file)
  t.ok(back.equals(model), 'every byte verifies')
})
