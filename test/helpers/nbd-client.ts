// A small raw NBD client for tests: speaks the handshake and the transmission phase byte by
// byte (with the codec of src/nbd/protocol.ts), so a test can send what QEMU never would — a bad
// magic, a request past the end, an oversize one, half a write.
import net from 'node:net'
import { ByteReader } from '../../src/nbd/byte-reader'
import * as P from '../../src/nbd/protocol'

export interface OptionReply { option: number, type: number, data: Buffer }
export interface GoResult { sizeBytes: number, flags: number, blockSizes: P.BlockSizeConstraints | null, replies: OptionReply[] }
export interface Chunk { flags: number, type: number, payload: Buffer }
export interface Reply { cookie: bigint, error: number, data?: Buffer, chunks: Chunk[] }

export class RawNbdClient {
  readonly socket: net.Socket
  private readonly reader: ByteReader
  structured = false
  private nextCookie = 1n
  private readonly pending = new Map<bigint, { type: number, offset: number, length: number, resolve: (r: Reply) => void, reject: (e: Error) => void, chunks: Chunk[] }>()
  private loop: Promise<void> | null = null
  readonly closed: Promise<void>

  private constructor (socket: net.Socket) {
    this.socket = socket
    this.reader = new ByteReader(socket, 1 << 20)
    this.closed = new Promise(resolve => socket.once('close', () => resolve()))
    socket.on('error', () => {})
  }

  static async connect (at: string | { host: string, port: number }): Promise<RawNbdClient> {
    const socket = typeof at === 'string' ? net.connect(at) : net.connect(at.port, at.host)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawNbdClient(socket)
  }

  async read (n: number): Promise<Buffer> {
    const b = await this.reader.read(n)
    if (b === null) throw new Error(`connection ended (wanted ${n} bytes)`)
    return b
  }

  // Reads the greeting and answers with the client flags.
  async greet (clientFlags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const g = await this.read(18)
    if (g.readBigUInt64BE(0) !== P.NBD_MAGIC || g.readBigUInt64BE(8) !== P.NBD_IHAVEOPT) throw new Error('bad greeting')
    const f = Buffer.alloc(4)
    f.writeUInt32BE(clientFlags >>> 0, 0)
    this.socket.write(f)
    return g.readUInt16BE(16)
  }

  // Sends an option and collects its replies up to the final one (ACK or an error).
  async option (option: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.socket.write(P.encodeOption(option, data))
    const out: OptionReply[] = []
    for (;;) {
      const h = await this.read(20)
      if (h.readBigUInt64BE(0) !== P.NBD_OPT_REPLY_MAGIC) throw new Error('bad option reply magic')
      const r = { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(h.readUInt32BE(16)) }
      out.push(r)
      if (r.type === P.NBD_REP_ACK || (r.type & 0x80000000) !== 0) return out
    }
  }

  async list (): Promise<string[]> {
    const replies = await this.option(P.NBD_OPT_LIST)
    return replies.filter(r => r.type === P.NBD_REP_SERVER).map(r => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString('utf8'))
  }

  async structuredReplies (): Promise<void> {
    const r = await this.option(P.NBD_OPT_STRUCTURED_REPLY)
    if (r[0].type !== P.NBD_REP_ACK) throw new Error('structured replies refused')
    this.structured = true
  }

  async setMetaContext (name: string, queries = [P.BASE_ALLOCATION]): Promise<OptionReply[]> {
    return await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest(name, queries))
  }

  // NBD_OPT_GO (or INFO); throws with the error reply's type on failure.
  async go (name: string, option = P.NBD_OPT_GO): Promise<GoResult> {
    const replies = await this.option(option, P.encodeInfoRequest(name, [P.NBD_INFO_BLOCK_SIZE]))
    const last = replies[replies.length - 1]
    if (last.type !== P.NBD_REP_ACK) throw Object.assign(new Error(`${option === P.NBD_OPT_GO ? 'GO' : 'INFO'} ${name}: reply 0x${last.type.toString(16)} ${last.data.toString('utf8')}`), { replyType: last.type })
    let sizeBytes = -1
    let flags = 0
    let blockSizes: P.BlockSizeConstraints | null = null
    for (const r of replies) {
      if (r.type !== P.NBD_REP_INFO) continue
      const t = r.data.readUInt16BE(0)
      if (t === P.NBD_INFO_EXPORT) { sizeBytes = Number(r.data.readBigUInt64BE(2)); flags = r.data.readUInt16BE(10) }
      if (t === P.NBD_INFO_BLOCK_SIZE) blockSizes = { minimumBytes: r.data.readUInt32BE(2), preferredBytes: r.data.readUInt32BE(6), maximumPayloadBytes: r.data.readUInt32BE(10) }
    }
    return { sizeBytes, flags, blockSizes, replies }
  }

  // Sends one request (with its payload, if any) and returns its reply when it comes.
  request (type: number, offset: number, length: number, opts: { flags?: number, payload?: Buffer, magic?: number } = {}): Promise<Reply> {
    const cookie = this.nextCookie++
    this.ensureLoop()
    const p = new Promise<Reply>((resolve, reject) => this.pending.set(cookie, { type, offset, length, resolve, reject, chunks: [] }))
    this.socket.write(P.encodeRequest({ magic: opts.magic, flags: opts.flags ?? 0, type, cookie, offset: BigInt(offset), lengthBytes: length }))
    if (opts.payload !== undefined) this.socket.write(opts.payload)
    return p
  }

  // Sends only a request header (and whatever part of a payload the test wants).
  sendRaw (b: Buffer): void { this.socket.write(b) }

  disconnect (): void {
    this.socket.write(P.encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, cookie: 0n, offset: 0n, lengthBytes: 0 }))
    this.socket.end()
  }

  destroy (): void { this.socket.destroy() }

  private ensureLoop (): void {
    this.loop ??= this.readReplies().catch((err: Error) => {
      for (const p of this.pending.values()) p.reject(err)
      this.pending.clear()
    })
  }

  private async readReplies (): Promise<void> {
    for (;;) {
      const m = await this.reader.read(4)
      if (m === null) throw new Error('connection closed by the server')
      const magic = m.readUInt32BE(0)
      if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
        const rest = await this.read(12)
        const error = rest.readUInt32BE(0)
        const cookie = rest.readBigUInt64BE(4)
        const p = this.pending.get(cookie)
        if (p === undefined) throw new Error(`reply to unknown cookie ${cookie}`)
        this.pending.delete(cookie)
        const data = p.type === P.NBD_CMD_READ && error === 0 && !this.structured ? await this.read(p.length) : undefined
        p.resolve({ cookie, error, data, chunks: [] })
      } else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC) {
        const rest = await this.read(16)
        const flags = rest.readUInt16BE(0)
        const type = rest.readUInt16BE(2)
        const cookie = rest.readBigUInt64BE(4)
        const payload = await this.read(rest.readUInt32BE(12))
        const p = this.pending.get(cookie)
        if (p === undefined) throw new Error(`chunk for unknown cookie ${cookie}`)
        p.chunks.push({ flags, type, payload })
        if ((flags & P.NBD_REPLY_FLAG_DONE) === 0) continue
        this.pending.delete(cookie)
        const err = p.chunks.find(c => (c.type & 0x8000) !== 0)
        const error = err === undefined ? 0 : err.payload.readUInt32BE(0)
        let data: Buffer | undefined
        if (p.type === P.NBD_CMD_READ && error === 0) {
          data = Buffer.alloc(p.length)
          for (const c of p.chunks) {
            if (c.type === P.NBD_REPLY_TYPE_OFFSET_DATA) c.payload.copy(data, Number(c.payload.readBigUInt64BE(0)) - p.offset, 8)
          }
        }
        p.resolve({ cookie, error, data, chunks: p.chunks })
      } else {
        throw new Error(`bad reply magic 0x${magic.toString(16)}`)
      }
    }
  }
}

// Extents of a block-status reply: [length, flags] pairs.
export function extentsOf (r: Reply): Array<[number, number]> {
  const c = r.chunks.find(c => c.type === P.NBD_REPLY_TYPE_BLOCK_STATUS)
  if (c === undefined) return []
  const out: Array<[number, number]> = []
  for (let at = 4; at < c.payload.length; at += 8) out.push([c.payload.readUInt32BE(at), c.payload.readUInt32BE(at + 4)])
  return out
}

export function errorMessage (r: Reply): string {
  const c = r.chunks.find(c => (c.type & 0x8000) !== 0)
  return c === undefined ? '' : c.payload.subarray(6, 6 + c.payload.readUInt16BE(4)).toString('utf8')
}
