// Where an export goes: a regular file (written in place: a raw image stays sparse), or a pipe,
// device or stdout (written in order, with backpressure).
import { once } from 'node:events'
import fs from 'node:fs'
import { Writable } from 'node:stream'
import { UkaiError } from '../errors'

// Holes are left for all-zero runs of at least this many bytes (aligned) in a raw image file.
export const SPARSE_GRAIN_BYTES = 64 * 1024

export interface ExportOutput {
  readonly positional: boolean    // writeAt allowed (a regular file): unwritten ranges stay holes
  readonly description: string
  write (data: Buffer): Promise<void>                 // append (sequential outputs and streams)
  writeAt (data: Buffer, position: number): Promise<void>
  finish (sizeBytes?: number): Promise<number>        // flushes; a positional raw image is extended to sizeBytes; returns bytes written
  abort (): Promise<void>                             // a failed export: remove a partial file we created
}

class SequentialOutput implements ExportOutput {
  readonly positional = false
  private error: Error | null = null
  private bytes = 0

  constructor (private readonly stream: Writable, readonly description: string, private readonly closeAtEnd: boolean) {
    stream.on('error', (err) => { this.error ??= err })
  }

  async write (data: Buffer): Promise<void> {
    if (this.error !== null) throw this.failed(this.error)
    this.bytes += data.length
    if (!this.stream.write(data)) {
      try {
        await once(this.stream, 'drain')
      } catch (err) {
        throw this.failed(err as Error)
      }
    }
  }

  async writeAt (): Promise<void> { throw UkaiError.internal('positional write to a sequential output') }

  async finish (): Promise<number> {
    if (this.error !== null) throw this.failed(this.error)
    if (this.closeAtEnd) {
      this.stream.end()
      await once(this.stream, 'finish').catch((err) => { throw this.failed(err as Error) })
    } else if (this.stream.writableNeedDrain) {
      await once(this.stream, 'drain').catch((err) => { throw this.failed(err as Error) })
    }
    return this.bytes
  }

  private failed (err: Error): UkaiError {
    return UkaiError.io(`writing to ${this.description} failed: ${err.message}`, err)
  }

  async abort (): Promise<void> {
    if (this.closeAtEnd) this.stream.destroy()
  }
}

class FileOutput implements ExportOutput {
  readonly positional = true
  private bytes = 0
  private appendAt = 0

  constructor (private readonly fh: fs.promises.FileHandle, private readonly path: string) {}
  get description (): string { return this.path }

  async write (data: Buffer): Promise<void> {
    await this.writeAt(data, this.appendAt)
    this.appendAt += data.length
  }

  async writeAt (data: Buffer, position: number): Promise<void> {
    let done = 0
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, position + done).catch((err: Error) => { throw UkaiError.io(`writing ${this.path} failed: ${err.message}`, err) })
      done += bytesWritten
    }
    this.bytes += data.length
  }

  async finish (sizeBytes?: number): Promise<number> {
    try {
      if (sizeBytes !== undefined) await this.fh.truncate(sizeBytes)
      await this.fh.sync()
    } finally {
      await this.fh.close()
    }
    return this.bytes
  }

  async abort (): Promise<void> {
    await this.fh.close().catch(() => {})
    await fs.promises.rm(this.path, { force: true })
  }
}

// '-' is stdout. A regular file (or a new one) is truncated and written in place; anything
// else (a FIFO, /dev/null, a device) is written in order.
export type OutputKind = 'stdout' | 'file' | 'sequential'

// What openOutput will open, without touching the target (the tenant API asks before it opens).
export async function outputKind (target: string): Promise<OutputKind> {
  if (target === '-') return 'stdout'
  let st: fs.Stats | null = null
  try {
    st = await fs.promises.stat(target)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw UkaiError.badArgument(`cannot use output '${target}': ${(err as Error).message}`)
  }
  if (st !== null && st.isDirectory()) throw UkaiError.badArgument(`output '${target}' is a directory`)
  return st !== null && !st.isFile() ? 'sequential' : 'file'
}

export async function openOutput (target: string): Promise<ExportOutput> {
  const kind = await outputKind(target)
  if (kind === 'stdout') return new SequentialOutput(process.stdout, 'stdout', false)
  if (kind === 'sequential') {
    const stream = fs.createWriteStream(target, { flags: 'w' })
    await once(stream, 'open').catch((err) => { throw UkaiError.badArgument(`cannot open output '${target}': ${(err as Error).message}`) })
    return new SequentialOutput(stream, target, true)
  }
  try {
    return new FileOutput(await fs.promises.open(target, 'w'), target)
  } catch (err) {
    throw UkaiError.badArgument(`cannot create output '${target}': ${(err as Error).message}`)
  }
}

// Writes a block's bytes at `position`, leaving holes for aligned all-zero grains.
export async function writeSparse (out: ExportOutput, data: Buffer, position: number): Promise<void> {
  let runStart = -1
  for (let at = 0; at < data.length; at += SPARSE_GRAIN_BYTES) {
    const end = Math.min(at + SPARSE_GRAIN_BYTES, data.length)
    const zero = isZero(data, at, end)
    if (!zero && runStart < 0) runStart = at
    if (zero && runStart >= 0) { await out.writeAt(data.subarray(runStart, at), position + runStart); runStart = -1 }
  }
  if (runStart >= 0) await out.writeAt(data.subarray(runStart), position + runStart)
}

const ZEROS = Buffer.alloc(SPARSE_GRAIN_BYTES)
export function isZero (data: Buffer, start = 0, end = data.length): boolean {
  for (let at = start; at < end; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, end - at)
    if (data.compare(ZEROS, 0, n, at, at + n) !== 0) return false
  }
  return true
}
