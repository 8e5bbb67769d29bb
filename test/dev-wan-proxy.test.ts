// The delaying TCP proxy: added round-trip latency, no per-chunk accumulation of the delay,
// byte-exact data both ways with half-close, the bandwidth cap, and clean shutdown.
import crypto from 'node:crypto'
import net from 'node:net'
import { once } from 'node:events'
import t from 'tap'
import type { TestLike } from './helpers/cluster'
import { startWanProxy } from './helpers/wan'

const MiB = 1024 * 1024
const DELAY_MS = 25

interface TestServer { port: number, address: string }

async function listen (t: TestLike, onConn: (s: net.Socket) => void): Promise<TestServer> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onConn(s)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  const port = (server.address() as net.AddressInfo).port
  return { port, address: `127.0.0.1:${port}` }
}

async function connect (t: TestLike, address: string): Promise<net.Socket> {
  const [host, port] = address.split(':')
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true })
  s.setNoDelay(true)
  t.teardown(() => { s.destroy() })
  await once(s, 'connect')
  return s
}

// Round trip of one small message through an echo server.
async function ping (s: net.Socket): Promise<number> {
  const t0 = performance.now()
  s.write('x')
  await once(s, 'data')
  return performance.now() - t0
}

t.test('round trips take two one-way delays, and pipelined chunks are not delayed one after another', async (t) => {
  const echo = await listen(t, (s) => { s.setNoDelay(true); s.pipe(s) })
  const proxy = await startWanProxy(t, { target: echo.address, delayMs: DELAY_MS })
  const direct = await connect(t, echo.address)
  const viaProxy = await connect(t, proxy.address)
  const directRtts: number[] = []
  const proxyRtts: number[] = []
  for (let i = 0; i < 10; i++) {
    directRtts.push(await ping(direct))
    proxyRtts.push(await ping(viaProxy))
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  t.comment(`median rtt direct ${median(directRtts).toFixed(2)} ms, through the proxy ${median(proxyRtts).toFixed(2)} ms`)
  t.ok(Math.min(...proxyRtts) >= 2 * DELAY_MS - 1, `every round trip through the proxy takes at least 2 × ${DELAY_MS} ms (min ${Math.min(...proxyRtts).toFixed(2)})`)
  // Generous: only a proxy that adds far more than its delay fails (a loaded machine adds stalls).
  t.ok(median(proxyRtts) < 2 * DELAY_MS + 1000, 'and not wildly more')

  // 20 messages 5 ms apart: scheduled delivery takes the pacing (~95 ms) + 50 ms; sleeping per
  // chunk would take ≥ 20 × 25 = 500 ms. The bound is relative to the pacing actually measured
  // (timers stretch on a loaded machine), with 10 delays of slack.
  let got = 0
  const allBack = new Promise<void>(resolve => viaProxy.on('data', (d: Buffer) => { got += d.length; if (got >= 20) resolve() }))
  const t0 = performance.now()
  for (let i = 0; i < 20; i++) {
    viaProxy.write('y')
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  const pacingMs = performance.now() - t0
  await allBack
  const tookMs = performance.now() - t0
  t.comment(`20 paced messages took ${tookMs.toFixed(1)} ms (pacing ${pacingMs.toFixed(1)} ms)`)
  t.ok(tookMs >= 2 * DELAY_MS, 'the last echo still took the delay')
  t.ok(tookMs < pacingMs + 10 * DELAY_MS, `delay is not added per chunk (${tookMs.toFixed(1)} ms < pacing + ${10 * DELAY_MS} ms)`)
  const st = proxy.stats()
  t.equal(st.connectionsOpen, 1)
  t.equal(st.bytesUp, 30)
  t.equal(st.bytesDown, 30)
})

t.test('data is byte-exact in both directions at once, and half-close is passed on', async (t) => {
  const down = crypto.randomBytes(3 * MiB + 123)
  const up = crypto.randomBytes(4 * MiB + 7)
  // The server sends its data at once; when the client's stream ends it appends the digest of
  // what it received and ends too.
  const server = await listen(t, (s) => {
    const h = crypto.createHash('sha256')
    s.on('data', (d: Buffer) => h.update(d))
    s.on('end', () => { s.end(h.digest()) })
    s.write(down)
  })
  const proxy = await startWanProxy(t, { target: server.address, delayMs: 5 })
  const s = await connect(t, proxy.address)
  const chunks: Buffer[] = []
  s.on('data', (d: Buffer) => chunks.push(d))
  s.end(up)
  await once(s, 'end')
  const all = Buffer.concat(chunks)
  t.equal(all.length, down.length + 32, 'received every byte the server sent plus its digest')
  t.equal(crypto.createHash('sha256').update(all.subarray(0, down.length)).digest('hex'), crypto.createHash('sha256').update(down).digest('hex'), 'target → client bytes intact')
  t.equal(all.subarray(down.length).toString('hex'), crypto.createHash('sha256').update(up).digest('hex'), 'client → target bytes intact (digest computed by the server)')
  const st = proxy.stats()
  t.equal(st.bytesUp, up.length)
  t.equal(st.bytesDown, down.length + 32)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(proxy.stats().connectionsOpen, 0, 'connection closed on both sides after both ends')
})

t.test('the bandwidth cap holds the transfer back', async (t) => {
  let received = 0
  let done!: () => void
  const allIn = new Promise<void>(resolve => { done = resolve })
  const srv = await listen(t, (s) => { s.on('data', (d: Buffer) => { received += d.length; if (received >= MiB) done() }) })
  const target = srv.address
  const proxy = await startWanProxy(t, { target, delayMs: 0, mbps: 8 }) // 1 MB/s
  const s = await connect(t, proxy.address)
  const t0 = performance.now()
  s.write(crypto.randomBytes(MiB))
  await allIn
  const tookMs = performance.now() - t0
  t.comment(`1 MiB at 8 Mbit/s took ${tookMs.toFixed(0)} ms`)
  t.ok(tookMs >= 800, `at least ~ (1 MiB - 64 KiB burst) / 1 MB/s (took ${tookMs.toFixed(0)} ms)`)
  t.equal(received, MiB)
})

t.test('a reader that stops reading pauses the sender instead of the proxy buffering everything', async (t) => {
  let serverSock: net.Socket | undefined
  const srv = await listen(t, (s) => { serverSock = s; s.pause() })
  const proxy = await startWanProxy(t, { target: srv.address, delayMs: 1 })
  const s = await connect(t, proxy.address)
  const chunk = Buffer.alloc(MiB)
  let written = 0
  // 32 MiB, waiting up to 100 ms for a drain whenever our own buffer is full.
  for (let i = 0; i < 32; i++) {
    if (s.write(chunk)) written += chunk.length
    else { written += chunk.length; await once(s, 'drain', { signal: AbortSignal.timeout(100) }).catch(() => {}) }
  }
  await new Promise(resolve => setTimeout(resolve, 300))
  const st = proxy.stats()
  t.comment(`written ${written / MiB} MiB, the proxy delivered ${(st.bytesUp / MiB).toFixed(1)} MiB, socket buffer ${(s.writableLength / MiB).toFixed(1)} MiB`)
  t.ok(s.writableLength > 0, 'the client is held back (its writes are buffered locally)')
  t.ok(st.bytesUp < 24 * MiB, 'the proxy did not take in everything while the reader stood still')
  serverSock?.resume()
})

t.test('close() ends open connections; a refused target closes the client', async (t) => {
  const echo = await listen(t, (s) => { s.pipe(s) })
  const proxy = await startWanProxy(t, { target: echo.address, delayMs: 1 })
  const s = await connect(t, proxy.address)
  s.on('error', () => {})
  t.ok(await ping(s) >= 0)
  s.resume()
  const ended = once(s, 'end')
  await proxy.close()
  await ended
  t.pass('client connection ended by close()')
  await proxy.close() // idempotent

  const dead = await startWanProxy(t, { target: '127.0.0.1:1', delayMs: 1 }) // nothing listens on port 1
  const c = await connect(t, dead.address)
  c.on('error', () => {})
  c.resume()
  await once(c, 'end')
  t.pass('client closed when the target refuses')
})

t.test('bad options are refused', async (t) => {
  const { startWanProxy: raw } = await import('../src/dev/wan-proxy')
  await t.rejects(raw({ target: 'nohost', delayMs: 1 }), { code: 'BAD_ARGUMENT' })
  await t.rejects(raw({ target: '127.0.0.1:1', delayMs: -1 }), { code: 'BAD_ARGUMENT' })
  await t.rejects(raw({ target: '127.0.0.1:1', delayMs: 1, mbps: -3 }), { code: 'BAD_ARGUMENT' })
})
