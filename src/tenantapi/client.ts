// The CLI's side of the tenant API: one call per verb, the reply's JSON parsed, a refusal turned
// back into the UkaiError the server raised (its code travels in the trailer, src/storagenode/status.ts);
// export and import as streams (the agent's side: streams.ts).
import { once } from 'node:events'
import type { Readable } from 'node:stream'
import * as grpc from '@grpc/grpc-js'
import { UkaiError, isUkaiError } from '../errors'
import type { ExportOutput } from '../export/output'
import { identityOfSubjectAltName } from '../storagenode/identity'
import { FLOW_CONTROL_WINDOW_BYTES } from '../storagenode/client'
import { codeOfServiceError } from '../storagenode/status'
import type { CertificateFiles } from '../storagenode/tls'
import { ExportChunk, ExportRequest, ImportChunk, ImportProgress, ImportStart, JsonReply, STREAM_CHUNK_BYTES, TenantApiMethod, TenantApiRequests, tenantApiService } from './wire'

export interface Progress { onStart: (totalBytes: number) => void, onProgress: (doneBytes: number) => void }
const ZEROS = Buffer.alloc(STREAM_CHUNK_BYTES)

// A snapshot may wait for the lease holder's commit (30 s by default) and a delete for every
// node: generous, but a hung agent still ends the call.
const TENANT_API_DEADLINE_MS = 120_000

export class TenantApiClient {
  private readonly client: grpc.Client & Record<string, any>

  constructor (readonly address: string, files: CertificateFiles) {
    // The server is an agent of the cluster CA (any agent: the address says which one).
    const credentials = grpc.experimental.createCertificateProviderChannelCredentials(files, files, {
      checkServerIdentity: (_host, cert) => {
        const id = identityOfSubjectAltName(cert.subjectaltname)
        return id?.role === 'agent' ? undefined : new Error(`the tenant API at ${address} presented the certificate of ${id === null ? 'no UKAI identity' : `${id.role} ${id.name}`}, not an agent's`)
      }
    })
    const Ctor = tenantApiService()
    // An export streams to us: the storage client's receive window (16 MiB), not HTTP/2's 64 KiB
    // (measured here, a 384 MiB stream export: 2.3× the admin path's time at 64 KiB, the same at 16 MiB).
    this.client = new Ctor(address, credentials, { 'grpc.ssl_target_name_override': 'tenant-api.ukai', 'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES }) as grpc.Client & Record<string, any>
  }

  async call<M extends TenantApiMethod, T = unknown> (method: M, req: Partial<TenantApiRequests[M]>): Promise<T> {
    const reply = await new Promise<JsonReply>((resolve, reject) => {
      this.client[method](req, { deadline: Date.now() + TENANT_API_DEADLINE_MS }, (err: grpc.ServiceError | null, res: JsonReply) => {
        if (err === null) resolve(res)
        else reject(this.refusal(err))
      })
    })
    return JSON.parse(reply.json) as T
  }

  // The UkaiError the server raised (or why the agent could not be reached).
  private refusal (err: grpc.ServiceError): UkaiError {
    const code = codeOfServiceError(err)
    const why = err.code === grpc.status.UNAVAILABLE && err.metadata?.get('ukai-code').length === 0 ? ` (is an agent serving the tenant API at ${this.address}? 'ukai mount --api-listen')` : ''
    return new UkaiError(code, `${err.details}${why}`)
  }

  // An export: the agent's engine output applied to `out`, in order (reading the next message
  // only when `out` took the last: grpc-js then holds back the HTTP/2 window, so the agent waits).
  // No deadline: a multi-GiB export takes what it takes; a dead agent ends the stream.
  // The output is opened at the first message, once the agent passed every check: a refused
  // export leaves the target as it was.
  async exportTo<T> (req: ExportRequest, open: () => Promise<ExportOutput>, progress: Progress): Promise<T> {
    const call = this.client.Export(req) as grpc.ClientReadableStream<ExportChunk>
    let summary: string | null = null
    let out: ExportOutput | null = null
    try {
      for await (const m of call as AsyncIterable<ExportChunk>) {
        out ??= await open()
        switch (m.kind) {
          case 'startTotalBytes': progress.onStart(m.startTotalBytes); break
          case 'doneBytes': progress.onProgress(m.doneBytes); break
          case 'data': if (m.data.positional) await out.writeAt(m.data.data, m.data.offset); else await out.write(m.data.data); break
          case 'zeroBytes': for (let left = m.zeroBytes; left > 0; left -= ZEROS.length) await out.write(ZEROS.subarray(0, Math.min(left, ZEROS.length))); break
          case 'finish': await out.finish(m.finish.hasSize ? m.finish.sizeBytes : undefined); break
          case 'summaryJson': summary = m.summaryJson; break
        }
      }
      if (summary === null) throw UkaiError.io(`the export from ${this.address} ended without its summary`)
    } catch (err) {
      call.cancel()
      await out?.abort()
      throw (err as grpc.ServiceError).code !== undefined && !isUkaiError(err) ? this.refusal(err as grpc.ServiceError) : err
    }
    return JSON.parse(summary) as T
  }

  // An import: what to do, the bytes of `source` in messages of at most STREAM_CHUNK_BYTES
  // (each sent when grpc-js has room: 'drain'), then the explicit end. Meanwhile the agent answers
  // with its own progress: `progress.onStart` once the whole input passed its checks (the bytes it
  // will apply), `onProgress` with the bytes applied so far — never what was merely sent. A
  // refusal by the agent stops the sending at once; `source` is destroyed then.
  async importFrom<T> (start: ImportStart, source: Readable, progress: Progress & { onSent?: (bytes: number) => void }): Promise<T> {
    const call = this.client.Import() as grpc.ClientDuplexStream<Partial<ImportChunk>, ImportProgress>
    // A call that ended (the agent refused, or we cancelled) never drains: the pump stops there
    // (the reason is the call's status, read below).
    let closed = false
    call.once('close', () => { closed = true })
    const stopped = new Error('the import call ended')
    const send = async (msg: Partial<ImportChunk>): Promise<void> => {
      if (closed) throw stopped
      if (call.write(msg)) return
      const ac = new AbortController()
      try {
        await Promise.race([once(call, 'drain', { signal: ac.signal }), once(call, 'close', { signal: ac.signal })])
      } finally { ac.abort() }
    }
    let pumpFailed: UkaiError | null = null
    const pump = async (): Promise<void> => {
      await send({ start })
      let sent = 0
      for await (const chunk of source as AsyncIterable<Buffer>) {
        for (let at = 0; at < chunk.length; at += STREAM_CHUNK_BYTES) await send({ data: chunk.subarray(at, at + STREAM_CHUNK_BYTES) })
        sent += chunk.length
        progress.onSent?.(sent)
      }
      await send({ end: true })
      call.end()
    }
    pump().catch((err: Error) => {
      if (err === stopped || closed || (!isUkaiError(err) && (err as grpc.ServiceError).code !== undefined)) return  // the call's own end, read below
      pumpFailed = isUkaiError(err) ? err : UkaiError.badArgument(`cannot read input '${start.input}': ${err.message}`)
      call.cancel()
    })
    let summary: string | null = null
    try {
      for await (const m of call as AsyncIterable<ImportProgress>) {
        switch (m.kind) {
          case 'startTotalBytes': progress.onStart(m.startTotalBytes); break
          case 'appliedBytes': progress.onProgress(m.appliedBytes); break
          case 'summaryJson': summary = m.summaryJson; break
        }
      }
    } catch (err) {
      if (pumpFailed !== null) throw pumpFailed
      throw (err as grpc.ServiceError).code !== undefined && !isUkaiError(err) ? this.refusal(err as grpc.ServiceError) : err
    } finally {
      source.destroy()
      call.cancel()  // a no-op on a finished call
    }
    if (pumpFailed !== null) throw pumpFailed
    if (summary === null) throw UkaiError.io(`the import through ${this.address} ended without its summary`)
    return JSON.parse(summary) as T
  }

  close (): void { this.client.close() }
}
