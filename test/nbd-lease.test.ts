// The lease over NBD, between two agents' sockets (what a live migration does): an NBD open takes
// no lease, the first write takes it, a write on the other host's socket moves it there by
// cooperative hand-over (the first host's acknowledged writes stay, flushed), writes go back and
// forth with every byte where the model says, and closing the last connection lets the lease go.
// Also: the same disk open on the FUSE file and over NBD on one host shares one lease.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import * as P from '../src/nbd/protocol'
import { cliJson, runCli } from './helpers/cli'
import { fuseUnavailable, makeTempDir, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { randomBytes, rng, sha256 } from './helpers/model'
import { RawNbdClient } from './helpers/nbd-client'
import { waitFor, waitForSocket } from './helpers/nbd'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 16 * MiB

interface Info { leaseHolder: string | null, leaseEpoch: number }

t.test('the lease over NBD between two agents', { skip: missingCli('mount') ?? fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  await Promise.all([startNode(t, { zk, id: 'a1', site: 'site-a' }), startNode(t, { zk, id: 'b1', site: 'site-b' })])
  const dir = makeTempDir(t, 'nbd-lease')
  const [a, b] = await Promise.all(['a', 'b'].map(async s => await startAgent(t, { zk, host: `hv-${s}`, site: `site-${s}`, extraArgs: ['--nbd-dir', path.join(dir, s)] })))
  const r = await runCli(['disk', 'create', 'vm', '--size', '16M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,b1'], { zk: zk.connectString })
  t.equal(r.code, 0, r.stderr)
  const sockA = path.join(dir, 'a', 'vm.sock')
  const sockB = path.join(dir, 'b', 'vm.sock')
  await Promise.all([waitForSocket(sockA), waitForSocket(sockB)])
  const info = async (): Promise<Info> => await cliJson<Info>(['disk', 'info', 'vm'], zk.connectString)
  const clients: RawNbdClient[] = []
  t.teardown(() => { for (const c of clients) c.destroy() })
  const open = async (sock: string): Promise<RawNbdClient> => {
    const c = await RawNbdClient.connect(sock)
    clients.push(c)
    await c.greet()
    await c.structuredReplies()
    await c.go('vm')
    return c
  }
  const model = Buffer.alloc(SIZE)
  const rand = rng(21)
  const write = async (c: RawNbdClient, off: number, len: number, flags = 0): Promise<number> => {
    const d = randomBytes(rand, len)
    const res = await c.request(P.NBD_CMD_WRITE, off, len, { payload: d, flags })
    if (res.error === 0) d.copy(model, off)
    return res.error
  }
  const readAll = async (c: RawNbdClient): Promise<Buffer> => (await c.request(P.NBD_CMD_READ, 0, SIZE)).data as Buffer

  const ca = await open(sockA)
  t.equal((await info()).leaseHolder, null, 'an NBD open takes no lease')
  t.equal(await write(ca, 0, 256 * KiB), 0, 'the first write on hv-a')
  const first = await info()
  t.equal(first.leaseHolder, 'hv-a', 'took the lease')

  const cb = await open(sockB)
  t.equal((await info()).leaseHolder, 'hv-a', 'opening on hv-b leaves it where it is (a migration destination connecting)')
  const t0 = Date.now()
  t.equal(await write(cb, 128 * KiB, 512 * KiB), 0, 'a write on hv-b')
  const moved = await info()
  t.equal(moved.leaseHolder, 'hv-b', `moved the lease to hv-b by hand-over (${Date.now() - t0} ms for that write)`)
  t.ok(moved.leaseEpoch > first.leaseEpoch, 'under a new epoch (hv-a is fenced)')
  t.equal(sha256(await readAll(cb)), sha256(model), 'hv-b reads hv-a\'s acknowledged write and its own')

  for (let round = 0; round < 4; round++) {
    const [c, host] = round % 2 === 0 ? [ca, 'hv-a'] : [cb, 'hv-b']
    t.equal(await write(c, Math.floor(rand() * (SIZE - MiB)), 1 + Math.floor(rand() * MiB), round === 3 ? P.NBD_CMD_FLAG_FUA : 0), 0, `round ${round}: a write on ${host}`)
    t.equal((await info()).leaseHolder, host, `round ${round}: the lease followed to ${host}`)
  }
  t.equal(sha256(await readAll(ca)), sha256(model), 'both hosts read the model (hv-a)')
  t.equal(sha256(await readAll(cb)), sha256(model), 'both hosts read the model (hv-b)')
  t.equal(sha256(await fs.promises.readFile(path.join(a.mountPoint, 'vm'))), sha256(model), 'and so do the FUSE files (hv-a)')
  t.equal(sha256(await fs.promises.readFile(path.join(b.mountPoint, 'vm'))), sha256(model), 'and so do the FUSE files (hv-b)')

  t.test('the FUSE file and NBD on one host share the lease', async (t) => {
    // hv-b holds it (round 3); the FUSE file on hv-b writes without any hand-over.
    const epoch = (await info()).leaseEpoch
    const fh = await fs.promises.open(path.join(b.mountPoint, 'vm'), 'r+')
    try {
      const d = randomBytes(rand, 64 * KiB)
      await fh.write(d, 0, d.length, 3 * MiB)
      d.copy(model, 3 * MiB)
      await fh.sync()
    } finally {
      await fh.close()
    }
    const now = await info()
    t.same([now.leaseHolder, now.leaseEpoch], ['hv-b', epoch], 'same holder, same epoch: no hand-over between FUSE and NBD on one host')
    t.equal(sha256(await readAll(cb)), sha256(model), 'the NBD connection reads the FUSE write')
  })

  t.test('closing the last connection lets the lease go', async (t) => {
    ca.disconnect()
    cb.disconnect()
    await Promise.all([ca.closed, cb.closed])
    await waitFor('the lease to be released', async () => (await info()).leaseHolder === null, 20_000)
    t.pass('no holder once both connections closed')
  })
})
