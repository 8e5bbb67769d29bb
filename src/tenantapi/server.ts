// The tenant API server (docs/architecture.md "Tenants"): runs inside an agent started with
// `ukai mount --api-listen HOST:PORT`, which holds the ZooKeeper credentials a tenant must not
// have. Mutual TLS with the agent's own certificate (src/storagenode/tls.ts: the same CA, the
// same rotation and revocation list as the storage nodes); every call is refused unless the
// client's certificate names a tenant (or an admin) and is not revoked, then handlers.ts decides
// what that tenant may touch (streams.ts: the same for export and import).
import * as grpc from '@grpc/grpc-js'
import { UkaiError, isUkaiError } from '../errors'
import { Identity, identityOfSubjectAltName, normalizeSerial } from '../storagenode/identity'
import { tuneServerSessions } from '../storagenode/server'
import { toServiceError } from '../storagenode/status'
import { CertificateFiles, serverCredentials } from '../storagenode/tls'
import type { RevocationList } from '../storagenode/revocation'
import { parseHostPort } from '../lib/host-port'
import { TenantApiDeps, accessRules, tenantApiHandlers } from './handlers'
import { ExportCall, ImportCall, exportForCaller, importForCaller } from './streams'
import { TENANT_API_METHODS, TenantApiMethod, tenantApiService } from './wire'

export interface TenantApiServerOptions extends TenantApiDeps {
  listen: string                 // HOST:PORT (port 0: any free port)
  tls: { files: CertificateFiles, revoked: Pick<RevocationList, 'has' | 'ready'> } | null  // null: --insecure, every caller refused
}

type ServiceFailure = ReturnType<typeof toServiceError>
type AuthContext = { sslPeerCertificate?: { subjectaltname?: string, serialNumber?: string } } | null

// Who called, or why they are refused.
function callerOf (auth: AuthContext, revoked: Pick<RevocationList, 'has'> | null, method: string): Identity {
  const cert = auth?.sslPeerCertificate
  if (cert === undefined || revoked === null) throw UkaiError.permissionDenied(`tenant API: ${method} refused: no client certificate`)
  const id = identityOfSubjectAltName(cert.subjectaltname)
  if (id === null) throw UkaiError.permissionDenied(`tenant API: ${method} refused: the client certificate names no UKAI identity`)
  const serial = cert.serialNumber === undefined ? '' : normalizeSerial(cert.serialNumber)
  if (serial === '' || revoked.has(serial)) throw UkaiError.permissionDenied(`tenant API: ${method} refused: the certificate of ${id.role} ${id.name} is revoked`)
  if (id.role !== 'tenant' && id.role !== 'admin') throw UkaiError.permissionDenied(`tenant API: ${method} refused: ${id.role} ${id.name} is not a tenant`)
  return id
}

export class TenantApiServer {
  private readonly server = new grpc.Server()
  private boundPort = 0

  constructor (private readonly opts: TenantApiServerOptions) {
    const handlers = tenantApiHandlers(opts)
    const rules = accessRules(opts.meta)
    const impl: grpc.UntypedServiceImplementation = {}
    for (const method of TENANT_API_METHODS) {
      impl[method] = (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        this.serve(method, call, call.request, async (caller) => await (handlers[method] as (c: Identity, r: unknown) => Promise<unknown>)(caller, call.request), (err, result) => {
          callback(err, err === null ? { json: JSON.stringify(result ?? null) } : undefined)
        })
      }
    }
    impl.Export = (call: ExportCall) => {
      this.serve('Export', call, call.request, async (caller) => await exportForCaller(opts, rules, caller, call), (err) => {
        if (err === null) call.end()
        else if (!call.cancelled) call.emit('error', err)
      })
    }
    impl.Import = (call: ImportCall) => {
      this.serve('Import', call, null, async (caller) => await importForCaller(opts, rules, caller, call), (err) => {
        if (err === null) call.end()  // the summary was the last message
        else if (!call.cancelled) call.emit('error', err)  // the status ends the call: the client stops sending
      })
    }
    this.server.addService(tenantApiService().service, impl)
  }

  // Who called (refused unless a tenant or admin with a valid certificate), then `run`, logged.
  private serve (method: string, call: Pick<grpc.ServerUnaryCall<unknown, unknown>, 'getAuthContext' | 'getPeer'>, request: unknown, run: (caller: Identity) => Promise<unknown>, done: (err: ServiceFailure | null, result?: unknown) => void): void {
    const log = this.opts.logger
    let caller: Identity
    try {
      caller = callerOf(call.getAuthContext() as AuthContext, this.opts.tls?.revoked ?? null, method)
    } catch (err) {
      log.warn({ method, err: (err as Error).message, peer: call.getPeer() }, 'tenant API call refused')
      done(toServiceError(err as UkaiError))
      return
    }
    run(caller).then((result) => {
      log.info({ method, caller: `${caller.role}/${caller.name}`, request }, 'tenant API call')
      done(null, result)
    }, (err: unknown) => {
      const e = isUkaiError(err) ? err : new UkaiError('INTERNAL', `tenant API ${method}: ${String(err)}`)
      if (e.code === 'INTERNAL') log.error({ method, err: String((err as Error)?.stack ?? err) }, 'tenant API call failed')
      else log.info({ method, caller: `${caller.role}/${caller.name}`, code: e.code, err: e.message }, 'tenant API call refused')
      done(toServiceError(e))
    })
  }

  get port (): number { return this.boundPort }

  async start (): Promise<void> {
    const { host, port } = parseHostPort(this.opts.listen, '--api-listen')
    const creds = this.opts.tls === null ? grpc.ServerCredentials.createInsecure() : serverCredentials(this.opts.tls.files)
    await this.opts.tls?.revoked.ready  // the CRL this agent last knew is in force before the first call
    const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, creds, (err, bound) => { if (err !== null) reject(UkaiError.badArgument(`--api-listen ${this.opts.listen}: ${err.message}`)); else resolve(bound) })
    })
    // An import streams into the agent: the storage nodes' receive window, not HTTP/2's 64 KiB.
    tuneServerSessions(this.server)
  }

  async close (): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.server.forceShutdown(); resolve() }, 2000)
      this.server.tryShutdown(() => { clearTimeout(timer); resolve() })
    })
  }
}

export type { TenantApiMethod }
