// A delaying TCP proxy that stands in for a WAN link (the kernel here has no netem).
//
// Every chunk read from one side is delivered to the other at (arrival + one-way delay), in order;
// chunks are scheduled, not slept on one after another, so the delay is added once per trip and
// not once per chunk. An optional bandwidth cap per direction is a token bucket: a chunk leaves
// when the bucket holds its size, then travels the delay. Backpressure: the source socket is
// paused while the destination's write buffer is full or the delay line holds too many bytes, so
// the proxy never buffers without bound. End of stream is passed on (half-close) after the data
// before it; an error on either side destroys both.
import net from 'node:net'
import { UkaiError } from '../errors'
import { parseHostPort } from '../lib/host-port'

// Bytes the delay line of one direction may hold before the source is paused.
const DELAY_LINE_BYTES_MAX = 8 * 1024 * 1024
// Token bucket depth: how far ahead of the average rate a burst may go.
const BUCKET_BYTES = 64 * 1024
const LISTEN_DEFAULT = '127.0.0.1:0'

export interface WanProxyOptions {
  target: string     // host:port the proxy forwards to
  delayMs: number    // one-way delay, applied in each direction
  mbps?: number      // bandwidth cap per direction in Mbit/s; absent or 0: none
  listen?: string    // host:port to listen on (default 127.0.0.1:0)
}

export interface WanProxyStats {
  connectionsOpen: number
  connectionsTotal: number
  bytesUp: number    // client → target
  bytesDown: number  // target → client
}

export interface WanProxy {
  readonly address: string // host:port it listens on
  stats (): WanProxyStats
  close (): Promise<void>  // stops listening and destroys open connections; idempotent
}

export function validateWanOptions (opts: { delayMs: number, mbps?: number }): void {
  if (!Number.isFinite(opts.delayMs) || opts.delayMs < 0 || opts.delayMs > 60_000) throw UkaiError.badArgument(`delay must be 0..60000 ms, not ${opts.delayMs}`)
  if (opts.mbps !== undefined && (!Number.isFinite(opts.mbps) || opts.mbps < 0)) throw UkaiError.badArgument(`bandwidth must be a positive number of Mbit/s, not ${opts.mbps}`)
}

// One direction of one connection: src → delay line (and bucket) → dst.
class DelayLine {
  private readonly queue: Array<{ atMs: number, chunk: Buffer }> = []
  private queuedBytes = 0
  private timer: NodeJS.Timeout | null = null
  private ended = false
  private dstFull = false
  private tokens = BUCKET_BYTES
  private tokensAtMs = 0
  private lastSendMs = 0

  constructor (
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly delayMs: number,
    private readonly bytesPerMs: number, // 0: no cap
    private readonly count: (n: number) => void
  ) {
    src.on('data', (chunk: Buffer) => { this.push(chunk) })
    src.on('end', () => { this.ended = true; this.pump() })
    dst.on('drain', () => { this.dstFull = false; this.flow() })
  }

  private push (chunk: Buffer): void {
    const now = performance.now()
    let sendMs = now
    if (this.bytesPerMs > 0) {
      // Chunks leave in order: this one cannot start before the previous one left.
      const t0 = Math.max(now, this.lastSendMs)
      this.tokens = Math.min(BUCKET_BYTES, this.tokens + (t0 - this.tokensAtMs) * this.bytesPerMs)
      this.tokensAtMs = t0
      this.tokens -= chunk.length
      sendMs = this.tokens < 0 ? t0 - this.tokens / this.bytesPerMs : t0
      this.lastSendMs = sendMs
    }
    this.queue.push({ atMs: sendMs + this.delayMs, chunk })
    this.queuedBytes += chunk.length
    this.flow()
    this.pump()
  }

  // Deliver what is due, then sleep until the next chunk is.
  private pump (): void {
    if (this.timer !== null) return
    const now = performance.now()
    while (this.queue.length > 0 && this.queue[0].atMs <= now + 0.5) {
      const { chunk } = this.queue.shift()!
      this.queuedBytes -= chunk.length
      this.count(chunk.length)
      if (this.dst.destroyed) continue
      if (!this.dst.write(chunk)) this.dstFull = true
    }
    if (this.queue.length > 0) {
      this.timer = setTimeout(() => { this.timer = null; this.pump() }, Math.max(1, this.queue[0].atMs - now))
    } else if (this.ended && !this.dst.destroyed) {
      this.dst.end()
    }
    this.flow()
  }

  private flow (): void {
    const stop = this.dstFull || this.queuedBytes >= DELAY_LINE_BYTES_MAX
    if (stop && !this.src.isPaused()) this.src.pause()
    else if (!stop && this.src.isPaused() && !this.src.destroyed) this.src.resume()
  }

  stop (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.queue.length = 0
    this.queuedBytes = 0
  }
}

export async function startWanProxy (opts: WanProxyOptions): Promise<WanProxy> {
  validateWanOptions(opts)
  const target = parseHostPort(opts.target, 'target')
  const listen = parseHostPort(opts.listen ?? LISTEN_DEFAULT, 'listen address')
  const bytesPerMs = opts.mbps !== undefined && opts.mbps > 0 ? opts.mbps * 1e6 / 8 / 1000 : 0
  const stats: WanProxyStats = { connectionsOpen: 0, connectionsTotal: 0, bytesUp: 0, bytesDown: 0 }
  const sockets = new Set<net.Socket>()

  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    stats.connectionsOpen++
    stats.connectionsTotal++
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    sockets.add(client)
    sockets.add(upstream)
    const lines = [
      new DelayLine(client, upstream, opts.delayMs, bytesPerMs, (n) => { stats.bytesUp += n }),
      new DelayLine(upstream, client, opts.delayMs, bytesPerMs, (n) => { stats.bytesDown += n })
    ]
    let closed = 0
    const onClose = (sock: net.Socket, other: net.Socket) => (hadError: boolean): void => {
      sockets.delete(sock)
      if (hadError) other.destroy()
      if (++closed === 2) {
        for (const l of lines) l.stop()
        stats.connectionsOpen--
      }
    }
    // An error (refused, reset) ends the whole connection; 'close' follows with hadError.
    client.on('error', () => { upstream.destroy() })
    upstream.on('error', () => { client.destroy() })
    client.on('close', onClose(client, upstream))
    upstream.on('close', onClose(upstream, client))
    client.resume()
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
  })
  const addr = server.address() as net.AddressInfo
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`

  let closing: Promise<void> | null = null
  return {
    address,
    stats: () => ({ ...stats }),
    close: () => {
      if (closing !== null) return closing
      closing = new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
      })
      return closing
    }
  }
}
