// Exact-length reads from a socket, with backpressure: the socket is paused while more than
// `highWaterBytes` (or the length being waited for, if larger) sit unread, so a client that
// sends faster than requests are served fills its own socket buffer, not the agent's memory.
import type { Duplex } from 'node:stream'

// A discarded payload is read in pieces of at most this size.
const SKIP_PIECE_BYTES = 1024 * 1024

export class ByteReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private wanted = 0
  private wake: (() => void) | null = null
  private ended = false

  constructor (private readonly socket: Duplex, private readonly highWaterBytes: number) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      if (this.buffered >= Math.max(this.highWaterBytes, this.wanted)) socket.pause()
      this.notify()
    })
    const end = (): void => { this.ended = true; this.notify() }
    socket.on('end', end)
    socket.on('close', end)
    socket.on('error', end)
  }

  get isEnded (): boolean { return this.ended && this.buffered === 0 }

  // Exactly n bytes, or null if the stream ended first.
  async read (n: number): Promise<Buffer | null> {
    while (this.buffered < n) {
      if (this.ended) return null
      this.wanted = n
      if (this.socket.isPaused()) this.socket.resume()
      await new Promise<void>(resolve => { this.wake = resolve })
    }
    this.wanted = 0
    const out = this.take(n)
    if (this.buffered < this.highWaterBytes && this.socket.isPaused() && !this.ended) this.socket.resume()
    return out
  }

  // Reads and drops n bytes without holding them; false if the stream ended first.
  async skip (n: number): Promise<boolean> {
    let left = n
    while (left > 0) {
      const piece = Math.min(left, SKIP_PIECE_BYTES)
      if (await this.read(piece) === null) return false
      left -= piece
    }
    return true
  }

  // Ends reading now (server shutdown): pending and later reads return null.
  abort (): void {
    this.ended = true
    this.chunks = []
    this.buffered = 0
    this.notify()
  }

  private take (n: number): Buffer {
    const first = this.chunks[0]
    if (first !== undefined && first.length >= n) {
      this.buffered -= n
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let at = 0
    while (at < n) {
      const c = this.chunks[0]
      const k = Math.min(c.length, n - at)
      c.copy(out, at, 0, k)
      at += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    this.buffered -= n
    return out
  }

  private notify (): void {
    const w = this.wake
    this.wake = null
    w?.()
  }
}
