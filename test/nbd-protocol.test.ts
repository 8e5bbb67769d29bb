// The agent's NBD server spoken to byte by byte (test/helpers/nbd-client.ts): what QEMU never
// sends. Unknown exports, bad options, a bad magic, requests past the end or over the maximum
// size, unknown commands and flags get the protocol's errors (or, where the protocol says so, a
// disconnect) and the agent serves on; pipelined requests are answered out of order; FUA and
// flush reach the nodes' fsync, also across connections (CAN_MULTI_CONN); a snapshot refuses
// writes with EPERM; a client that disconnects mid-write loses nothing acknowledged.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import * as P from '../src/nbd/protocol'
import { runCli } from './helpers/cli'
import { fuseUnavailable, missingCli } from './helpers/cluster'
import { snapshot } from './helpers/export'
import { randomBytes, rng, sha256 } from './helpers/model'
import { RawNbdClient, errorMessage, extentsOf } from './helpers/nbd-client'
import { startNbdCluster, waitFor, waitForSocket } from './helpers/nbd'
import { fsyncCount } from './helpers/replica-faults'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 64 * MiB

const skip = missingCli('mount') ?? fuseUnavailable()

t.test('NBD protocol edge cases against the agent', { skip: skip ?? false }, async (t) => {
  // No flush-behind: one subtest counts the nodes' fsyncs to show that only FUA and FLUSH make
  // them, and a background flush 20 ms after a write would land in its window (1 run in 4 did).
  const c = await startNbdCluster(t, ['--flush-behind-ms', '0'])
  const zk = c.zk.connectString
  for (const name of ['vm', 'other']) {
    const r = await runCli(['disk', 'create', name, '--size', '64M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,a2'], { zk })
    t.equal(r.code, 0, r.stderr)
  }
  const sock = c.socket('vm')
  await waitForSocket(sock)
  await waitForSocket(c.socket('other'))
  const tcp = { host: '127.0.0.1', port: c.port }
  const fuseFile = path.join(c.agent.mountPoint, 'vm')
  const model = Buffer.alloc(SIZE)
  const fsyncs = async (): Promise<number> => (await Promise.all(c.nodes.map(async n => await fsyncCount(n.id, n.address)))).reduce((a, b) => a + b, 0)
  const clients: RawNbdClient[] = []
  t.teardown(() => { for (const cl of clients) cl.destroy() })
  const connect = async (at: string | { host: string, port: number } = sock): Promise<RawNbdClient> => {
    const cl = await RawNbdClient.connect(at)
    clients.push(cl)
    return cl
  }
  // Connected, structured replies and base:allocation on, in transmission on `name`.
  const open = async (name = 'vm', at: string | { host: string, port: number } = sock, structured = true): Promise<{ cl: RawNbdClient, go: Awaited<ReturnType<RawNbdClient['go']>> }> => {
    const cl = await connect(at)
    await cl.greet()
    if (structured) {
      await cl.structuredReplies()
      await cl.setMetaContext(name)
    }
    return { cl, go: await cl.go(name) }
  }

  t.test('handshake, list and info', async (t) => {
    const cl = await connect()
    t.equal(await cl.greet(), P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 'fixed newstyle, no zeroes')
    t.same(await cl.list(), ['vm'], 'the disk\'s socket lists only that disk')
    const info = await cl.go('vm', P.NBD_OPT_INFO)
    t.equal(info.sizeBytes, SIZE, 'INFO: the size')
    t.same(info.blockSizes, { minimumBytes: 1, preferredBytes: 4096, maximumPayloadBytes: 32 * MiB }, 'INFO: block-size constraints')
    const want = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FAST_ZERO | P.NBD_FLAG_CAN_MULTI_CONN
    t.equal(info.flags, want, 'INFO: flush, FUA, trim, write-zeroes, fast-zero, multi-conn; not read-only')
    const unknown = await cl.option(P.NBD_OPT_GO, P.encodeInfoRequest('other', []))
    t.equal(unknown[unknown.length - 1].type, P.NBD_REP_ERR_UNKNOWN, 'another disk is unknown on this disk\'s socket')
    t.equal((await cl.option(P.NBD_OPT_INFO, P.encodeInfoRequest('nosuch', [])))[0].type, P.NBD_REP_ERR_UNKNOWN, 'INFO of an unknown export: NBD_REP_ERR_UNKNOWN')
    t.equal((await cl.option(99))[0].type, P.NBD_REP_ERR_UNSUP, 'an unknown option: NBD_REP_ERR_UNSUP')
    t.equal((await cl.option(P.NBD_OPT_LIST, Buffer.from('x')))[0].type, P.NBD_REP_ERR_INVALID, 'LIST with data: NBD_REP_ERR_INVALID')
    t.equal((await cl.setMetaContext('vm'))[0].type, P.NBD_REP_ERR_INVALID, 'SET_META_CONTEXT before structured replies: NBD_REP_ERR_INVALID')
    t.equal((await cl.option(P.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1])))[0].type, P.NBD_REP_ERR_INVALID, 'a malformed GO: NBD_REP_ERR_INVALID')
    t.equal((await cl.option(P.NBD_OPT_STARTTLS))[0].type, P.NBD_REP_ERR_POLICY, 'STARTTLS: refused by policy')
    await cl.structuredReplies()
    const listed = await cl.option(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest('vm', ['base:']))
    t.same(listed.map(r => r.type), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK], 'LIST_META_CONTEXT base: offers one context')
    t.equal(listed[0].data.subarray(4).toString(), P.BASE_ALLOCATION, 'base:allocation')
    const set = await cl.setMetaContext('vm', [P.BASE_ALLOCATION, 'qemu:dirty-bitmap:x'])
    t.same(set.map(r => r.type), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK], 'SET_META_CONTEXT selects base:allocation and ignores the rest')
    const go = await cl.go('vm')
    t.equal(go.flags & P.NBD_FLAG_SEND_DF, P.NBD_FLAG_SEND_DF, 'with structured replies: DF too')
    cl.disconnect()
    await cl.closed

    const tcpCl = await connect(tcp)
    await tcpCl.greet()
    t.same(await tcpCl.list(), ['other', 'vm'], 'TCP lists every disk')
    t.equal((await tcpCl.option(P.NBD_OPT_GO, P.encodeInfoRequest('', [])))[0].type, P.NBD_REP_ERR_UNKNOWN, 'TCP has no default export')
    t.equal((await tcpCl.option(P.NBD_OPT_ABORT))[0].type, P.NBD_REP_ACK, 'ABORT is acknowledged')
    await tcpCl.closed
    t.pass('and the server closes')
  })

  t.test('handshake violations disconnect', async (t) => {
    const a = await connect()
    await a.greet(1 << 5)
    await a.closed
    t.pass('unknown client flags: disconnected')
    const b = await connect()
    await b.greet()
    const opt = P.encodeOption(P.NBD_OPT_LIST)
    opt.writeUInt32BE(0xdeadbeef, 0)
    b.sendRaw(opt)
    await b.closed
    t.pass('an option with a bad magic: disconnected')
    const d = await connect()
    await d.greet()
    d.sendRaw(P.encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nosuch')))
    await d.closed
    t.pass('EXPORT_NAME of an unknown export: disconnected (the option has no error reply)')
    const e = await connect()
    await e.greet()
    const o = Buffer.alloc(16)
    o.writeBigUInt64BE(P.NBD_IHAVEOPT, 0); o.writeUInt32BE(P.NBD_OPT_GO, 8); o.writeUInt32BE(0x7fffffff, 12)
    e.sendRaw(o)
    await e.closed
    t.pass('option data of 2 GiB: disconnected without reading it')
  })

  t.test('bad requests get errors and the connection serves on', async (t) => {
    const { cl } = await open()
    const r = (type: number, off: number, len: number, opts?: Parameters<RawNbdClient['request']>[3]): ReturnType<RawNbdClient['request']> => cl.request(type, off, len, opts)
    t.equal((await r(P.NBD_CMD_READ, SIZE, 512)).error, P.NBD_EINVAL, 'read at the end: EINVAL')
    t.equal((await r(P.NBD_CMD_READ, SIZE - 512, 1024)).error, P.NBD_EINVAL, 'read across the end: EINVAL')
    t.equal((await r(P.NBD_CMD_READ, 2 ** 52, 512)).error, P.NBD_EINVAL, 'read far past the end: EINVAL')
    const past = await r(P.NBD_CMD_WRITE, SIZE - 512, 1024, { payload: Buffer.alloc(1024, 1) })
    t.equal(past.error, P.NBD_ENOSPC, 'write across the end: ENOSPC (the spec\'s choice)')
    t.match(errorMessage(past), /past the end/, 'with a message')
    t.equal((await r(P.NBD_CMD_TRIM, SIZE, 4096)).error, P.NBD_EINVAL, 'trim past the end: EINVAL')
    t.equal((await r(P.NBD_CMD_WRITE_ZEROES, SIZE - 4096, 8192)).error, P.NBD_ENOSPC, 'write-zeroes past the end: ENOSPC')
    t.equal((await r(P.NBD_CMD_BLOCK_STATUS, SIZE, 4096)).error, P.NBD_EINVAL, 'block status past the end: EINVAL')
    t.equal((await r(P.NBD_CMD_READ, 0, 32 * MiB + 1)).error, P.NBD_EOVERFLOW, 'a read over the maximum payload: EOVERFLOW')
    const big = Buffer.alloc(32 * MiB + 4096, 0x5a)
    t.equal((await r(P.NBD_CMD_WRITE, 0, big.length, { payload: big })).error, P.NBD_EINVAL, 'a write over the maximum payload: EINVAL (its payload skipped)')
    t.equal((await r(99, 0, 0)).error, P.NBD_EINVAL, 'an unknown command: EINVAL')
    t.equal((await r(P.NBD_CMD_READ, 0, 512, { flags: P.NBD_CMD_FLAG_REQ_ONE })).error, P.NBD_EINVAL, 'a flag not valid for the command: EINVAL')
    t.equal((await r(P.NBD_CMD_FLUSH, 4096, 0)).error, P.NBD_EINVAL, 'flush with an offset: EINVAL')
    t.equal((await r(P.NBD_CMD_WRITE_ZEROES, 0, 4096, { flags: P.NBD_CMD_FLAG_FAST_ZERO | P.NBD_CMD_FLAG_NO_HOLE })).error, P.NBD_ENOTSUP, 'fast zero without a hole: ENOTSUP')
    const ok = await r(P.NBD_CMD_READ, 0, 4096)
    t.equal(ok.error, 0, 'a good read still works')
    t.same(ok.data, Buffer.alloc(4096), 'and nothing of the refused writes landed')
    cl.disconnect()

    const simple = await open('vm', sock, false)
    t.equal((await simple.cl.request(P.NBD_CMD_READ, 0, 32 * MiB + 1)).error, P.NBD_EINVAL, 'simple replies: an oversize read is EINVAL')
    t.equal((await simple.cl.request(P.NBD_CMD_BLOCK_STATUS, 0, 4096)).error, P.NBD_EINVAL, 'block status without a metadata context: EINVAL')
    const sr = await simple.cl.request(P.NBD_CMD_READ, 0, 8192)
    t.same([sr.error, sr.data?.length], [0, 8192], 'simple replies: a read carries its data')
    simple.cl.disconnect()

    const bad = await open()
    const inFlight = bad.cl.request(P.NBD_CMD_READ, 0, 4096).then(() => 'answered', () => 'dropped with the connection')
    bad.cl.sendRaw(P.encodeRequest({ magic: 0x12345678, flags: 0, type: P.NBD_CMD_READ, cookie: 77n, offset: 0n, lengthBytes: 512 }))
    await bad.cl.closed
    t.pass('a request with a bad magic: disconnected')
    t.comment(`the request sent before it: ${await inFlight}`)
  })

  t.test('pipelined requests, answered out of order', async (t) => {
    const { cl } = await open()
    const rand = rng(3)
    const writes: Array<Promise<{ error: number }>> = []
    for (let i = 0; i < 48; i++) {
      const off = i * 256 * KiB + Math.floor(rand() * 1000)
      const data = randomBytes(rand, 64 * KiB)
      data.copy(model, off)
      writes.push(cl.request(P.NBD_CMD_WRITE, off, data.length, { payload: data }))
    }
    const results = await Promise.all(writes)
    t.ok(results.every(r => r.error === 0), '48 writes sent at once, all acknowledged')
    const read = await cl.request(P.NBD_CMD_READ, 0, 12 * MiB + 64 * KiB)
    t.equal(sha256(read.data as Buffer), sha256(model.subarray(0, 12 * MiB + 64 * KiB)), 'read back equal')

    let outOfOrder = false
    for (let attempt = 0; attempt < 3 && !outOfOrder; attempt++) {
      const order: string[] = []
      const big = randomBytes(rand, 16 * MiB)
      big.copy(model, 32 * MiB)
      const w = cl.request(P.NBD_CMD_WRITE, 32 * MiB, big.length, { payload: big, flags: P.NBD_CMD_FLAG_FUA }).then(r => { order.push('write'); return r })
      const rd = cl.request(P.NBD_CMD_READ, 60 * MiB, 4096).then(r => { order.push('read'); return r })
      const [wr, rr] = await Promise.all([w, rd])
      t.same([wr.error, rr.error], [0, 0], `attempt ${attempt + 1}: both answered (${order.join(' then ')})`)
      outOfOrder = order[0] === 'read'
    }
    t.ok(outOfOrder, 'a small read sent after a 16 MiB FUA write is answered first')
    cl.disconnect()
  })

  t.test('FUA and flush reach the nodes\' fsync, across connections', async (t) => {
    const { cl } = await open()
    const b = await open()
    t.equal(b.go.flags & P.NBD_FLAG_CAN_MULTI_CONN, P.NBD_FLAG_CAN_MULTI_CONN, 'CAN_MULTI_CONN offered')
    const w = async (cl: RawNbdClient, off: number, flags = 0): Promise<void> => {
      const d = randomBytes(rng(off), 8 * KiB)
      d.copy(model, off)
      t.equal((await cl.request(P.NBD_CMD_WRITE, off, d.length, { payload: d, flags })).error, 0)
    }
    // The first write after the last connection closed takes the lease again, which fences
    // (and fsyncs the fence file on) every node: done before counting.
    await w(cl, 39 * MiB)
    t.equal((await cl.request(P.NBD_CMD_FLUSH, 0, 0)).error, 0, 'flush')
    let before = await fsyncs()
    await w(cl, 40 * MiB)
    t.equal(await fsyncs(), before, 'a plain write: no fsync on the nodes')
    await w(cl, 41 * MiB, P.NBD_CMD_FLAG_FUA)
    let after = await fsyncs()
    t.ok(after >= before + 2, `a FUA write: both replicas fsynced before the reply (${after - before} fsyncs)`)
    before = after
    await w(cl, 42 * MiB)
    t.equal((await b.cl.request(P.NBD_CMD_FLUSH, 0, 0)).error, 0, 'a flush on another connection')
    after = await fsyncs()
    t.ok(after >= before + 2, `covers the write acknowledged on the first (${after - before} fsyncs)`)
    const seen = await b.cl.request(P.NBD_CMD_READ, 42 * MiB, 8 * KiB)
    t.same(seen.data, model.subarray(42 * MiB, 42 * MiB + 8 * KiB), 'which the other connection reads')
    cl.disconnect()
    b.cl.disconnect()
  })

  t.test('block status: holes per disk block', async (t) => {
    const { cl } = await open()
    const st = await cl.request(P.NBD_CMD_BLOCK_STATUS, 0, SIZE)
    t.equal(st.error, 0)
    const ext = extentsOf(st)
    let at = 0
    for (const [len, flags] of ext) {
      const first = Math.floor(at / MiB)
      const hasData = model.subarray(at, at + len).some(x => x !== 0)
      if (flags === (P.NBD_STATE_HOLE | P.NBD_STATE_ZERO)) t.notOk(hasData, `blocks ${first}..${(at + len) / MiB - 1}: a hole that the model has no data in`)
      at += len
    }
    t.equal(at, SIZE, 'extents cover the disk')
    t.ok(ext.some(([, f]) => f === 3) && ext.some(([, f]) => f === 0), 'both holes and data reported')
    const one = await cl.request(P.NBD_CMD_BLOCK_STATUS, 50 * MiB + 512, 4096, { flags: P.NBD_CMD_FLAG_REQ_ONE })
    t.same(extentsOf(one), [[4096, 3]], 'REQ_ONE: one extent, no longer than asked (block 50 is a hole)')
    const dataOne = await cl.request(P.NBD_CMD_BLOCK_STATUS, 0, 100, { flags: P.NBD_CMD_FLAG_REQ_ONE })
    t.same(extentsOf(dataOne), [[100, 0]], 'REQ_ONE on data')
    cl.disconnect()
  })

  t.test('a disk grown under an open export keeps the size announced at open', async (t) => {
    const { cl } = await open('other', c.socket('other'))
    t.equal((await cl.request(P.NBD_CMD_WRITE, 0, 4096, { payload: Buffer.alloc(4096, 1) })).error, 0, 'a write')
    const grown = await runCli(['disk', 'resize', 'other', '--size', '96M'], { zk })
    t.equal(grown.code, 0, grown.stderr)
    await waitFor('the agent to see the new size', async () => (await fs.promises.stat(path.join(c.agent.mountPoint, 'other'))).size === 96 * MiB)
    const ext = extentsOf(await cl.request(P.NBD_CMD_BLOCK_STATUS, 0, SIZE))
    t.equal(ext.reduce((n, [len]) => n + len, 0), SIZE, 'block status describes exactly the 64 MiB announced (the last hole is not stretched to 96 MiB)')
    t.equal((await cl.request(P.NBD_CMD_READ, SIZE, 4096)).error, P.NBD_EINVAL, 'a read past the announced size: EINVAL')
    cl.disconnect()
    const again = await open('other', c.socket('other'))
    t.equal(again.go.sizeBytes, 96 * MiB, 'a new connection sees 96 MiB')
    again.cl.disconnect()
  })

  t.test('a snapshot export is read-only', async (t) => {
    await snapshot(zk, 'vm@s1')
    await waitFor('vm@s1 on the socket', async () => {
      const cl = await connect(); await cl.greet()
      const names = await cl.list(); cl.destroy()
      return names.includes('vm@s1')
    })
    for (const at of [sock, tcp]) {
      const { cl, go } = await open('vm@s1', at)
      t.equal(go.flags & P.NBD_FLAG_READ_ONLY, P.NBD_FLAG_READ_ONLY, 'NBD_FLAG_READ_ONLY')
      t.equal(go.flags & (P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES), 0, 'no trim or write-zeroes offered')
      t.equal((await cl.request(P.NBD_CMD_WRITE, 0, 512, { payload: Buffer.alloc(512, 1) })).error, P.NBD_EPERM, 'write: EPERM')
      t.equal((await cl.request(P.NBD_CMD_TRIM, 0, 512)).error, P.NBD_EPERM, 'trim: EPERM')
      t.equal((await cl.request(P.NBD_CMD_WRITE_ZEROES, 0, 512)).error, P.NBD_EPERM, 'write-zeroes: EPERM')
      t.equal((await cl.request(P.NBD_CMD_FLUSH, 0, 0)).error, 0, 'flush: nothing to do')
      const rd = await cl.request(P.NBD_CMD_READ, 0, 13 * MiB)
      t.equal(sha256(rd.data as Buffer), sha256(model.subarray(0, 13 * MiB)), 'reads the snapshot')
      cl.disconnect()
    }
  })

  t.test('a client that disconnects mid-write loses nothing acknowledged', async (t) => {
    const { cl } = await open()
    const rand = rng(99)
    for (let i = 0; i < 8; i++) {
      const d = randomBytes(rand, 256 * KiB)
      d.copy(model, 16 * MiB + i * 256 * KiB)
      t.equal((await cl.request(P.NBD_CMD_WRITE, 16 * MiB + i * 256 * KiB, d.length, { payload: d })).error, 0, `write ${i} acknowledged`)
    }
    // Half of a 1 MiB write, then the connection drops: the write never starts.
    const half = P.encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, cookie: 1000n, offset: BigInt(24 * MiB), lengthBytes: MiB })
    cl.sendRaw(Buffer.concat([half, Buffer.alloc(MiB / 2, 0xee)]))
    await new Promise(resolve => setTimeout(resolve, 100))
    cl.destroy()
    await cl.closed
    const onDisk = await fs.promises.readFile(fuseFile)
    t.equal(sha256(onDisk.subarray(16 * MiB, 18 * MiB)), sha256(model.subarray(16 * MiB, 18 * MiB)), 'every acknowledged write is there (read through the FUSE file)')
    t.equal(sha256(onDisk.subarray(24 * MiB, 25 * MiB)), sha256(Buffer.alloc(MiB)), 'the half-sent write left nothing')
    t.equal(sha256(onDisk), sha256(model), 'the whole disk equals the model')
  })

  t.test('the agent serves on after all of it', async (t) => {
    const { cl, go } = await open()
    t.equal(go.sizeBytes, SIZE, 'a new connection works')
    cl.disconnect()
    const log = await fs.promises.readFile(c.agent.logFile, 'utf8')
    t.notMatch(log, /NBD session failed|unexpected error in an NBD request|NBD request failed unexpectedly/, 'no unexpected error in the agent\'s log')
  })

  t.test('the agent stops with a connection open: its requests finish, the sockets go', async (t) => {
    const { cl } = await open()
    const idle = await open('other', c.socket('other'))
    const d = randomBytes(rng(5), 4 * MiB)
    const w = cl.request(P.NBD_CMD_WRITE, 8 * MiB, d.length, { payload: d, flags: P.NBD_CMD_FLAG_FUA }).then(r => r.error, () => -1)
    await new Promise(resolve => setTimeout(resolve, 20))
    const t0 = Date.now()
    await c.agent.stop()
    t.ok(Date.now() - t0 < 20_000, `the agent stopped in ${Date.now() - t0} ms`)
    const got = await w
    t.comment(`the write in flight at SIGTERM: ${got === 0 ? 'acknowledged' : got === -1 ? 'not answered' : `error ${got}`}`)
    await cl.closed
    await idle.cl.closed
    t.pass('both connections closed by the agent')
    t.notOk(fs.existsSync(sock), 'the disk sockets are removed')
    const log = await fs.promises.readFile(c.agent.logFile, 'utf8')
    t.notMatch(log, /NBD session failed|NBD request failed unexpectedly|closing an NBD export failed/, 'a clean stop')
  })
})
