// Export and Import through the tenant API: the access rules of handlers.ts, then the admin
// path's engine (src/export) with the gRPC stream as its output or its input. Nothing here
// reads, writes, checks quotas or cleans up on its own: an export is exportSnapshot writing
// into a StreamOutput; an import is importDisk spooling the client's bytes (as it spools stdin)
// and checking the whole input, the quotas and the target before it creates or writes anything.
//
// Memory stays bounded for any disk size: the engine fetches at most its prefetch budget ahead
// (32 MiB), a message carries at most STREAM_CHUNK_BYTES, and a send waits for 'drain' when
// grpc-js's buffer (16 messages) is full — so a slow client slows the export, it does not
// grow the agent. An import lands in a temp file on the agent first (what the admin path does
// with stdin); a client that goes away before its explicit end leaves nothing but that file, which
// is removed. Its answer stream carries the import engine's own progress — the bytes it has
// applied to the disk, not the bytes received — at most every IMPORT_PROGRESS_INTERVAL_MS (a
// message per record of a 1 TiB import would be millions), the last value always, then the
// summary: a handful of small messages a second, whatever the disk size.
import { once } from 'node:events'
import type * as grpc from '@grpc/grpc-js'
import { UkaiError } from '../errors'
import { ExportFormat, ExportSummary, exportSnapshot } from '../export/export-disk'
import { ImportFormat, ImportSummary, importDisk } from '../export/import-disk'
import { ExportOutput, isZero } from '../export/output'
import { validateDiskName, validateId, validateSnapshotName } from '../meta/schema'
import { checkTenantRoom } from '../meta/tenants'
import type { Identity } from '../storagenode/identity'
import { withNodePool } from '../vdisk/node-pool'
import { AccessRules, TenantApiDeps } from './handlers'
import { ExportChunk, ExportRequest, ImportChunk, ImportProgress, ImportStart, STREAM_CHUNK_BYTES } from './wire'

// A message to send: one field of ExportChunk's oneof (proto-loader sets `kind` on the other side).
type Outgoing = { [K in ExportChunk['kind']]: Omit<Extract<ExportChunk, { kind: K }>, 'kind'> }[ExportChunk['kind']]
export type ExportCall = grpc.ServerWritableStream<ExportRequest, Outgoing>
type ImportOutgoing = { [K in ImportProgress['kind']]: Omit<Extract<ImportProgress, { kind: K }>, 'kind'> }[ImportProgress['kind']]
export type ImportCall = grpc.ServerDuplexStream<ImportChunk, ImportOutgoing>

// How often an import tells its client how far it got.
const IMPORT_PROGRESS_INTERVAL_MS = 200

// Resolves when grpc-js wants more, rejects when the call is over (the client went away).
async function drained (call: ExportCall): Promise<void> {
  const ac = new AbortController()
  try {
    await Promise.race([
      once(call, 'drain', { signal: ac.signal }),
      once(call, 'cancelled', { signal: ac.signal }).then(() => { throw UkaiError.unavailable('the client went away during the export') }),
      once(call, 'close', { signal: ac.signal }).then(() => { throw UkaiError.unavailable('the export stream closed early') })
    ])
  } finally {
    ac.abort()
  }
}

// The export engine's output (src/export/output.ts) as messages: what the CLI applies to its own
// output, positional when the CLI's is a regular file (so a raw image keeps its holes there).
class StreamOutput implements ExportOutput {
  readonly description = 'the tenant API stream'
  private bytes = 0

  constructor (private readonly call: ExportCall, readonly positional: boolean) {}

  async send (msg: Outgoing): Promise<void> {
    if (this.call.cancelled || this.call.destroyed) throw UkaiError.unavailable('the client went away during the export')
    if (!this.call.write(msg)) await drained(this.call)
  }

  // Progress is tiny and in order with the data: no wait for 'drain' (the next data send waits).
  note (msg: Outgoing): void { if (!this.call.cancelled && !this.call.destroyed) this.call.write(msg) }

  async write (data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += STREAM_CHUNK_BYTES) {
      const piece = data.subarray(at, Math.min(at + STREAM_CHUNK_BYTES, data.length))
      await this.send(isZero(piece) ? { zeroBytes: piece.length } : { data: { data: piece, positional: false, offset: 0 } })
    }
    this.bytes += data.length
  }

  async writeAt (data: Buffer, position: number): Promise<void> {
    if (!this.positional) throw UkaiError.internal('positional write to a sequential output')
    for (let at = 0; at < data.length; at += STREAM_CHUNK_BYTES) {
      await this.send({ data: { data: data.subarray(at, Math.min(at + STREAM_CHUNK_BYTES, data.length)), positional: true, offset: position + at } })
    }
    this.bytes += data.length
  }

  async finish (sizeBytes?: number): Promise<number> {
    await this.send({ finish: { hasSize: sizeBytes !== undefined, sizeBytes: sizeBytes ?? 0 } })
    return this.bytes
  }

  async abort (): Promise<void> {}  // the error status tells the CLI to remove its partial file
}

export async function exportForCaller (deps: TenantApiDeps, rules: AccessRules, caller: Identity, call: ExportCall): Promise<ExportSummary> {
  const req = call.request
  validateSnapshotName(req.snapshot)
  if (req.from !== '') validateSnapshotName(req.from)
  if (req.format !== 'raw' && req.format !== 'stream') throw UkaiError.badArgument(`bad export format '${req.format}' (raw or stream)`)
  if (req.site !== '') validateId(req.site, 'site')
  await rules.ownDisk(caller, req.disk, 'export')
  const out = new StreamOutput(call, req.positional)
  const summary = await withNodePool(deps.meta, { host: deps.host, site: req.site !== '' ? req.site : deps.site ?? '', logger: deps.logger }, async (pool) =>
    await exportSnapshot(deps.meta, pool, {
      disk: req.disk, snapshot: req.snapshot, from: req.from !== '' ? req.from : undefined, format: req.format as ExportFormat, output: out,
      onStart: (n) => out.note({ startTotalBytes: n }), onProgress: (n) => out.note({ doneBytes: n })
    }))
  await out.send({ summaryJson: JSON.stringify(summary) })
  return summary
}

export async function importForCaller (deps: TenantApiDeps, rules: AccessRules, caller: Identity, call: ImportCall): Promise<ImportSummary> {
  const messages = call[Symbol.asyncIterator]() as AsyncIterator<ImportChunk>
  const first = await messages.next()
  if (first.done === true || first.value.kind !== 'start') throw UkaiError.badArgument('an import through the tenant API starts with what to import where')
  const start: ImportStart = first.value.start
  validateDiskName(start.disk)
  if (!['auto', 'raw', 'stream'].includes(start.format)) throw UkaiError.badArgument(`bad import format '${start.format}' (auto, raw or stream)`)
  const what = `import into disk '${start.disk}'`
  // Every check that needs no data runs before a byte is taken: another tenant's disk, tenant
  // or site is refused here, and so is a tenant with no room left for one more disk.
  let tenant: string | undefined
  let site: string | undefined
  if (start.incremental) {
    await rules.ownDisk(caller, start.disk, 'import into')
  } else {
    if ((await deps.meta.listDiskNames()).includes(start.disk)) await rules.ownDisk(caller, start.disk, 'import into')
    tenant = rules.tenantFor(caller, start.tenant, what)
    site = await rules.siteFor(caller, start.site, what)
    await checkTenantRoom(deps.meta, tenant, { disks: 1 }, `importing into disk '${start.disk}'`)
  }
  const input = start.input !== '' ? start.input : 'the input'
  const source = (async function * (): AsyncGenerator<Buffer> {
    for (;;) {
      let next: IteratorResult<ImportChunk>
      try {
        next = await messages.next()
      } catch {
        next = { done: true, value: undefined }
      }
      if (next.done === true) throw UkaiError.unavailable(`the import of '${input}' into disk '${start.disk}' stopped before its end (the client went away); nothing was created`)
      if (next.value.kind === 'end') return
      if (next.value.kind !== 'data' || next.value.data.length > STREAM_CHUNK_BYTES) throw UkaiError.badArgument(`the import of '${input}' sent a bad message; nothing was created`)
      yield next.value.data
    }
  })()
  // Progress is tiny and rate-limited: written without waiting for 'drain'.
  const note = (msg: ImportOutgoing): void => { if (!call.cancelled && !call.destroyed) call.write(msg) }
  let applied = 0
  let toldMs = 0
  const summary = await withNodePool(deps.meta, { host: deps.host, site: site ?? deps.site ?? '', logger: deps.logger }, async (pool) =>
    await importDisk(deps.meta, pool, {
      input, source, disk: start.disk, incremental: start.incremental, format: start.format as ImportFormat, site, tenant,
      blockSizeBytes: start.blockSizeBytes > 0 ? start.blockSizeBytes : undefined, replicas: start.replicas > 0 ? start.replicas : undefined, logger: deps.logger,
      onStart: (n) => { note({ startTotalBytes: n }); toldMs = Date.now() },
      onProgress: (n) => {
        applied = n
        if (Date.now() - toldMs < IMPORT_PROGRESS_INTERVAL_MS) return
        toldMs = Date.now()
        note({ appliedBytes: n })
      }
    }))
  note({ appliedBytes: applied })
  note({ summaryJson: JSON.stringify(summary) })
  return summary
}
