// One NBD connection: the fixed-newstyle handshake, then the transmission phase. Requests of one
// connection run concurrently (up to REQUESTS_IN_FLIGHT_MAX and IN_FLIGHT_BYTES_MAX) and are
// answered as they finish, out of order. Bad input gets an NBD error; only what the protocol
// calls a hard disconnect (a bad magic, unknown client flags, an option too large to read)
// drops the connection. When the connection ends for any reason, the requests already taken
// run to the end before the export is closed, so a write acknowledged is never lost and a write
// whose payload did not fully arrive is never started.
import type { Socket } from 'node:net'
import { Logger } from '../log'
import { safetyCatch } from '../errors'
import { ByteReader } from './byte-reader'
import { NbdExport, NbdExportSource } from './agent-exports'
import { toNbdError } from './nbd-errno'
import { traceWrite, writeTraceOn } from '../lib/write-trace'
import * as P from './protocol'
import { NBD_PAYLOAD_BYTES_MAX, checkRequest, commandName } from './request-checks'

// Requests of one connection served at once (QEMU's NBD client keeps at most 16 in flight).
const REQUESTS_IN_FLIGHT_MAX = 32
// Payload bytes (writes received, reads being answered) one connection holds at once; a single
// request larger than this still runs, alone.
const IN_FLIGHT_BYTES_MAX = 64 * 1024 * 1024
// Unread bytes buffered before the socket is paused.
const READ_HIGH_WATER_BYTES = 1024 * 1024
// Handshake option data larger than this ends the connection (no option we know needs more).
const OPTION_DATA_BYTES_MAX = 64 * 1024
// Advertised block-size constraints: any alignment works (the engine splits per block and never
// reads to modify), 4 KiB is efficient, 32 MiB per request.
export const NBD_BLOCK_SIZES: P.BlockSizeConstraints = { minimumBytes: 1, preferredBytes: 4096, maximumPayloadBytes: NBD_PAYLOAD_BYTES_MAX }
// WRITE_ZEROES with NO_HOLE writes real zeros, this many bytes per engine write.
const ZERO_WRITE_BYTES = 1024 * 1024
const ZEROES = Buffer.alloc(ZERO_WRITE_BYTES)
// A block-status extent length must fit 32 bits; the last one is cut here (a multiple of 4 KiB).
const EXTENT_BYTES_MAX = 0xfffff000
const META_CONTEXT_ID = 1
// At server shutdown a connection gets this long to finish the requests it took and take their
// replies; a client that stops reading is then cut off (its requests still run to the end).
const STOP_DRAIN_MS = 10_000

// Which export names a listening socket offers: a disk's own socket only that disk ("" or its
// name) and its snapshots; the TCP listener every disk and snapshot by name.
export interface ExportScope {
  names: () => string[]
  resolve: (requested: string) => string | null  // the export's canonical name, or null
}

export interface SessionOptions {
  socket: Socket
  exports: NbdExportSource
  scope: ExportScope
  logger: Logger
}

interface Negotiated {
  noZeroes: boolean
  structured: boolean
  metaContextFor: string | null   // canonical export name base:allocation was selected for
}

export class NbdSession {
  private readonly socket: Socket
  private readonly reader: ByteReader
  private readonly exports: NbdExportSource
  private readonly scope: ExportScope
  private readonly log: Logger
  private exp: NbdExport | null = null
  private stopping = false
  private inFlight = 0
  private inFlightBytes = 0
  private wakeWindow: (() => void) | null = null
  private done: Promise<void> | null = null
  private readonly neg: Negotiated = { noZeroes: false, structured: false, metaContextFor: null }
  private blockStatusOn = false

  constructor (opts: SessionOptions) {
    this.socket = opts.socket
    this.exports = opts.exports
    this.scope = opts.scope
    this.log = opts.logger
    this.reader = new ByteReader(opts.socket, READ_HIGH_WATER_BYTES)
    this.socket.on('error', (err) => this.log.debug({ err: String(err) }, 'NBD connection error'))
    this.socket.setNoDelay?.(true)
  }

  // Serves the connection until it ends; never rejects.
  run (): Promise<void> {
    this.done ??= this.serve().catch(err => {
      this.log.error({ err: String((err as Error)?.stack ?? err) }, 'NBD session failed')
    }).finally(async () => {
      this.socket.destroy()
      await this.exp?.close().catch(err => this.log.warn({ export: this.exp?.name, err: String(err) }, 'closing an NBD export failed'))
    })
    return this.done
  }

  // Server shutdown: take no new request, let the ones taken finish and answer, then disconnect.
  async stop (): Promise<void> {
    this.stopping = true
    if (this.exp === null) this.socket.destroy() // still haggling: nothing to drain
    else this.socket.pause()
    this.reader.abort()
    const cutOff = setTimeout(() => this.socket.destroy(), STOP_DRAIN_MS)
    try {
      await this.run()
    } finally {
      clearTimeout(cutOff)
    }
  }

  private async serve (): Promise<void> {
    this.send(P.encodeGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES))
    const flagsBuf = await this.reader.read(4)
    if (flagsBuf === null) return
    const clientFlags = flagsBuf.readUInt32BE(0)
    if ((clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
      this.log.warn({ clientFlags }, 'NBD client sent unknown flags: disconnecting')
      return
    }
    this.neg.noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0
    if (!await this.haggle()) return
    await this.transmit()
  }

  // --- handshake ------------------------------------------------------------------------------

  // Options until one enters transmission (true) or the connection is to end (false).
  private async haggle (): Promise<boolean> {
    for (;;) {
      if (this.stopping) return false
      const hdr = await this.reader.read(P.NBD_OPTION_HEADER_BYTES)
      if (hdr === null) return false
      const { magic, option, lengthBytes } = P.decodeOptionHeader(hdr)
      if (magic !== P.NBD_IHAVEOPT) {
        this.log.warn({ magic: magic.toString(16) }, 'NBD option with a bad magic: disconnecting')
        return false
      }
      if (lengthBytes > OPTION_DATA_BYTES_MAX) {
        this.log.warn({ option, lengthBytes }, 'NBD option data too large: disconnecting')
        return false
      }
      const data = await this.reader.read(lengthBytes)
      if (data === null) return false
      const reply = (type: number, body?: Buffer): void => this.send(P.encodeOptionReply(option, type, body))
      const fail = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'))
      try {
        switch (option) {
          case P.NBD_OPT_EXPORT_NAME: {
            // The protocol has no way to refuse this option but to disconnect.
            const name = this.scope.resolve(data.toString('utf8'))
            const exp = name === null ? null : await this.exports.open(name).catch(err => { safetyCatch(err); this.log.warn({ err: String(err) }, 'NBD export could not be opened'); return null })
            if (exp === null) return false
            this.exp = exp
            this.send(P.encodeExportNameReply(exp.sizeBytes, this.transmissionFlags(exp.readOnly), this.neg.noZeroes))
            this.blockStatusOn = this.neg.structured && this.neg.metaContextFor === name
            return true
          }
          case P.NBD_OPT_ABORT:
            reply(P.NBD_REP_ACK)
            return false
          case P.NBD_OPT_LIST:
            if (data.length !== 0) { fail(P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data'); break }
            for (const name of this.scope.names()) reply(P.NBD_REP_SERVER, P.encodeServerReplyData(name))
            reply(P.NBD_REP_ACK)
            break
          case P.NBD_OPT_STARTTLS:
            fail(P.NBD_REP_ERR_POLICY, 'TLS is not offered: use the Unix socket (file permissions) or a loopback listener')
            break
          case P.NBD_OPT_INFO:
          case P.NBD_OPT_GO:
            if (await this.infoOrGo(option, data)) return true
            break
          case P.NBD_OPT_STRUCTURED_REPLY:
            if (data.length !== 0) { fail(P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data'); break }
            this.neg.structured = true
            reply(P.NBD_REP_ACK)
            break
          case P.NBD_OPT_LIST_META_CONTEXT:
          case P.NBD_OPT_SET_META_CONTEXT:
            this.metaContext(option, data)
            break
          default:
            fail(P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`)
        }
      } catch (err) {
        if (err instanceof P.NbdProtocolError) fail(P.NBD_REP_ERR_INVALID, err.message)
        else {
          safetyCatch(err)
          this.log.warn({ option, err: String(err) }, 'NBD option failed')
          fail(P.NBD_REP_ERR_UNKNOWN, `export unavailable: ${(err as Error).message}`)
        }
      }
    }
  }

  // NBD_OPT_INFO and NBD_OPT_GO; true when GO entered transmission.
  private async infoOrGo (option: number, data: Buffer): Promise<boolean> {
    const req = P.decodeInfoRequest(data)
    const reply = (type: number, body?: Buffer): void => this.send(P.encodeOptionReply(option, type, body))
    const name = this.scope.resolve(req.name)
    const unknown = (): false => { reply(P.NBD_REP_ERR_UNKNOWN, Buffer.from(`no export '${req.name}'`, 'utf8')); return false }
    if (name === null) return unknown()
    let info: { sizeBytes: number, readOnly: boolean } | null
    let exp: NbdExport | null = null
    if (option === P.NBD_OPT_GO) {
      exp = await this.exports.open(name)
      info = exp
    } else {
      info = await this.exports.describe(name)
    }
    if (info === null) return unknown()
    reply(P.NBD_REP_INFO, P.encodeInfoExport(info.sizeBytes, this.transmissionFlags(info.readOnly)))
    reply(P.NBD_REP_INFO, P.encodeInfoBlockSize(NBD_BLOCK_SIZES))
    if (req.infos.includes(P.NBD_INFO_NAME)) reply(P.NBD_REP_INFO, P.encodeInfoName(name))
    reply(P.NBD_REP_ACK)
    if (exp === null) return false
    this.exp = exp
    this.blockStatusOn = this.neg.structured && this.neg.metaContextFor === name
    return true
  }

  private metaContext (option: number, data: Buffer): void {
    const reply = (type: number, body?: Buffer): void => this.send(P.encodeOptionReply(option, type, body))
    const set = option === P.NBD_OPT_SET_META_CONTEXT
    if (set) this.neg.metaContextFor = null // replaced even when this one fails
    if (!this.neg.structured) { reply(P.NBD_REP_ERR_INVALID, Buffer.from('negotiate structured replies first', 'utf8')); return }
    const req = P.decodeMetaContextRequest(data)
    const name = this.scope.resolve(req.name)
    if (name === null) { reply(P.NBD_REP_ERR_UNKNOWN, Buffer.from(`no export '${req.name}'`, 'utf8')); return }
    const matches = set
      ? req.queries.includes(P.BASE_ALLOCATION)
      : req.queries.length === 0 || req.queries.some(q => q === 'base:' || q === P.BASE_ALLOCATION)
    if (matches) reply(P.NBD_REP_META_CONTEXT, P.encodeMetaContextReplyData(set ? META_CONTEXT_ID : 0, P.BASE_ALLOCATION))
    if (set && matches) this.neg.metaContextFor = name
    reply(P.NBD_REP_ACK)
  }

  private transmissionFlags (readOnly: boolean): number {
    // One engine per disk on this host serves every connection and the FUSE file alike, and its
    // flush covers every write acknowledged on any of them: CAN_MULTI_CONN holds.
    let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_CAN_MULTI_CONN
    if (readOnly) f |= P.NBD_FLAG_READ_ONLY
    else f |= P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FAST_ZERO
    if (this.neg.structured) f |= P.NBD_FLAG_SEND_DF // one content chunk per read, always
    return f
  }

  // --- transmission ---------------------------------------------------------------------------

  private async transmit (): Promise<void> {
    const exp = this.exp as NbdExport
    const running = new Set<Promise<void>>()
    try {
      for (;;) {
        await this.window()
        if (this.stopping) break
        const hdr = await this.reader.read(P.NBD_REQUEST_HEADER_BYTES)
        if (hdr === null) break
        const req = P.decodeRequest(hdr)
        if (req.magic !== P.NBD_REQUEST_MAGIC) {
          this.log.warn({ magic: req.magic.toString(16) }, 'NBD request with a bad magic: disconnecting')
          this.socket.destroy()
          break
        }
        if (req.type === P.NBD_CMD_DISC) break
        let payload: Buffer | null = null
        if (req.type === P.NBD_CMD_WRITE) {
          if (req.lengthBytes > NBD_PAYLOAD_BYTES_MAX) {
            // Its payload still follows: read past it to stay in step, then refuse.
            if (!await this.reader.skip(req.lengthBytes)) break
            this.replyError(req, P.NBD_EINVAL, `write of ${req.lengthBytes} bytes: at most ${NBD_PAYLOAD_BYTES_MAX} per request`)
            continue
          }
          payload = await this.reader.read(req.lengthBytes)
          if (payload === null) break // cut off mid-payload: never started, never acknowledged
          if (writeTraceOn) traceWrite('nbd.req', Number(req.offset))
        }
        const bytes = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_READ ? Math.min(req.lengthBytes, NBD_PAYLOAD_BYTES_MAX) : 0
        this.inFlight++
        this.inFlightBytes += bytes
        const p = this.handle(exp, req, payload).catch(err => {
          this.log.error({ err: String((err as Error)?.stack ?? err) }, 'NBD request failed unexpectedly')
        }).finally(() => {
          this.inFlight--
          this.inFlightBytes -= bytes
          running.delete(p)
          const w = this.wakeWindow
          this.wakeWindow = null
          w?.()
        })
        running.add(p)
      }
    } finally {
      // Whatever ended the loop, the requests taken finish (and are answered if the socket is
      // still there) before the export closes.
      await Promise.all([...running])
      await endSocket(this.socket)
    }
  }

  private async window (): Promise<void> {
    while (this.inFlight > 0 && (this.inFlight >= REQUESTS_IN_FLIGHT_MAX || this.inFlightBytes >= IN_FLIGHT_BYTES_MAX)) {
      await new Promise<void>(resolve => { this.wakeWindow = resolve })
    }
  }

  // Runs one request and answers it. Never throws for an operating error: that is the reply.
  private async handle (exp: NbdExport, req: P.Request, payload: Buffer | null): Promise<void> {
    const bad = checkRequest(exp, req, this.neg.structured, this.blockStatusOn)
    if (bad !== null) return this.replyError(req, bad.error, bad.message)
    const offset = Number(req.offset)
    const length = req.lengthBytes
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0
    try {
      switch (req.type) {
        case P.NBD_CMD_READ: {
          const data = length === 0 ? Buffer.alloc(0) : await exp.read(offset, length)
          if (data.length !== length) throw new Error(`read of ${length} bytes at ${offset} returned ${data.length}`)
          return await this.replyRead(req, offset, data)
        }
        case P.NBD_CMD_WRITE:
          if (length > 0) await exp.write(offset, payload as Buffer)
          if (fua) await exp.flush()
          if (writeTraceOn) { await this.replyOk(req); traceWrite('nbd.reply', offset); return }
          break
        case P.NBD_CMD_FLUSH:
          await exp.flush()
          break
        case P.NBD_CMD_TRIM:
          if (length > 0) await exp.discard(offset, length)
          if (fua) await exp.flush()
          break
        case P.NBD_CMD_WRITE_ZEROES:
          if ((req.flags & P.NBD_CMD_FLAG_NO_HOLE) !== 0) await this.writeZeroes(exp, offset, length)
          else if (length > 0) await exp.discard(offset, length) // reads back as zeros, frees the space
          if (fua) await exp.flush()
          break
        case P.NBD_CMD_BLOCK_STATUS:
          return await this.replyBlockStatus(exp, req, offset, length)
        case P.NBD_CMD_CACHE:
          break // a hint; reads are served from the nodes (or their files) anyway
      }
      await this.replyOk(req)
    } catch (err) {
      const error = toNbdError(err, this.log, commandName(req.type))
      await this.replyError(req, error, (err as Error)?.message ?? String(err))
    }
  }

  private async writeZeroes (exp: NbdExport, offset: number, length: number): Promise<void> {
    for (let at = 0; at < length; at += ZERO_WRITE_BYTES) {
      const n = Math.min(ZERO_WRITE_BYTES, length - at)
      await exp.write(offset + at, ZEROES.subarray(0, n))
    }
  }

  private async replyBlockStatus (exp: NbdExport, req: P.Request, offset: number, length: number): Promise<void> {
    const runs = await exp.allocation.runs(offset, length)
    let extents: P.Extent[]
    if (runs === null || runs.length === 0) {
      extents = [{ lengthBytes: length, flags: 0 }] // unknown: "allocated" is always safe
    } else {
      extents = []
      let at = offset
      for (const r of runs) {
        if (at >= offset + length || extents.length >= P.NBD_EXTENTS_PER_CHUNK_MAX) break
        const end = r.offset + r.lengthBytes
        if (end <= at) continue
        // The export's size was fixed at open: a disk grown since is not described past it.
        const stop = Math.min(end, exp.sizeBytes)
        if (stop <= at) break
        extents.push({ lengthBytes: Math.min(stop - at, EXTENT_BYTES_MAX), flags: r.hole ? P.NBD_STATE_HOLE | P.NBD_STATE_ZERO : 0 })
        at = stop
      }
      if (extents.length === 0) extents = [{ lengthBytes: length, flags: 0 }]
      if ((req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0) extents = [{ lengthBytes: Math.min(extents[0].lengthBytes, length), flags: extents[0].flags }]
    }
    await this.write([P.encodeBlockStatusChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, META_CONTEXT_ID, extents)])
  }

  // --- replies --------------------------------------------------------------------------------

  private async replyRead (req: P.Request, offset: number, data: Buffer): Promise<void> {
    if (!this.neg.structured) return await this.write([P.encodeSimpleReply(req.cookie, 0), data])
    if (data.length === 0) return await this.write([P.encodeChunkHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0)])
    await this.write([P.encodeOffsetDataHeader(req.cookie, P.NBD_REPLY_FLAG_DONE, offset, data.length), data])
  }

  private async replyOk (req: P.Request): Promise<void> {
    await this.write([P.encodeSimpleReply(req.cookie, 0)])
  }

  private async replyError (req: P.Request, error: number, message: string): Promise<void> {
    if (this.neg.structured) await this.write([P.encodeErrorChunk(req.cookie, P.NBD_REPLY_FLAG_DONE, error, message)])
    else await this.write([P.encodeSimpleReply(req.cookie, error)])
  }

  private send (b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b)
  }

  // Writes one reply's pieces back to back (no other reply in between), then waits while the
  // socket's buffer is full: a client that stops reading stops its own requests.
  private async write (parts: Buffer[]): Promise<void> {
    const s = this.socket
    if (s.destroyed || s.writableEnded) return
    s.cork()
    for (const b of parts) s.write(b)
    s.uncork()
    if (s.writableNeedDrain) {
      await new Promise<void>(resolve => {
        const done = (): void => { s.off('drain', done); s.off('close', done); resolve() }
        s.on('drain', done)
        s.on('close', done)
      })
    }
  }
}

// Ends our side once the replies are out (a client that does not take them within
// STOP_DRAIN_MS is cut off); resolves also when the socket closes or errors first.
async function endSocket (s: Socket): Promise<void> {
  if (s.destroyed) return
  await new Promise<void>(resolve => {
    const timer = setTimeout(() => s.destroy(), STOP_DRAIN_MS)
    const done = (): void => { clearTimeout(timer); s.off('close', done); s.off('finish', done); resolve() }
    s.once('close', done)
    s.once('finish', done)
    s.end()
  })
}
