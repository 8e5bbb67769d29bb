// The CLI's side of the tenant API: one call per verb, the reply's JSON parsed, a refusal turned
// back into the UkaiError the server raised (its code travels in the trailer, src/storagenode/status.ts).
import * as grpc from '@grpc/grpc-js'
import { UkaiError } from '../errors'
import { identityOfSubjectAltName } from '../storagenode/identity'
import { codeOfServiceError } from '../storagenode/status'
import type { CertificateFiles } from '../storagenode/tls'
import { JsonReply, TenantApiMethod, TenantApiRequests, tenantApiService } from './wire'

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
    this.client = new Ctor(address, credentials, { 'grpc.ssl_target_name_override': 'tenant-api.ukai' }) as grpc.Client & Record<string, any>
  }

  async call<M extends TenantApiMethod, T = unknown> (method: M, req: Partial<TenantApiRequests[M]>): Promise<T> {
    const reply = await new Promise<JsonReply>((resolve, reject) => {
      this.client[method](req, { deadline: Date.now() + TENANT_API_DEADLINE_MS }, (err: grpc.ServiceError | null, res: JsonReply) => {
        if (err === null) { resolve(res); return }
        const code = codeOfServiceError(err)
        const why = err.code === grpc.status.UNAVAILABLE && err.metadata?.get('ukai-code').length === 0 ? ` (is an agent serving the tenant API at ${this.address}? 'ukai mount --api-listen')` : ''
        reject(new UkaiError(code, `${err.details}${why}`))
      })
    })
    return JSON.parse(reply.json) as T
  }

  close (): void { this.client.close() }
}
