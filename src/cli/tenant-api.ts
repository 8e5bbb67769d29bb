// A CLI holding a tenant's certificate has no ZooKeeper credentials (a tenant must not: it could
// rewrite its quotas): its disk, snapshot, clone, relocate, export and import verbs go to the tenant API of an
// agent instead (--api HOST:PORT, else $UKAI_API). Any other certificate goes to ZooKeeper
// directly, as before.
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { parseHostPort } from '../lib/host-port'
import { TenantApiClient } from '../tenantapi/client'
import type { TenantApiMethod, TenantApiRequests } from '../tenantapi/wire'
import { processTlsFiles } from './tls-options'

export const API_ENV = 'UKAI_API'

// Whether this CLI holds a tenant's certificate (its verbs go through the tenant API).
export function isTenantCli (): boolean { return processTlsFiles()?.identity.role === 'tenant' }

function tenantApiOf (cmd: Command): TenantApiClient | null {
  const files = processTlsFiles()
  if (files === undefined || files.identity.role !== 'tenant') return null
  const given = (cmd.optsWithGlobals() as { api?: string }).api ?? process.env[API_ENV]
  if (given === undefined || given === '') {
    throw UkaiError.badArgument(`${files.dir} holds the certificate of tenant ${files.identity.name}: tenants go through the tenant API — give --api HOST:PORT or set ${API_ENV} (an agent started with 'ukai mount --api-listen'; 'ukai dev up' prints its address)`)
  }
  parseHostPort(given, given === process.env[API_ENV] ? API_ENV : '--api')
  return new TenantApiClient(given, files)
}

// `viaApi` when this CLI holds a tenant's certificate, else `direct` (ZooKeeper).
export async function tenantApiOr<T> (cmd: Command, viaApi: (api: TenantApiClient) => Promise<T>, direct: () => Promise<T>): Promise<T> {
  const api = tenantApiOf(cmd)
  if (api === null) return await direct()
  try {
    return await viaApi(api)
  } finally {
    api.close()
  }
}

// One unary verb through the tenant API when this CLI holds a tenant's certificate, else `direct`.
export async function tenantOr<T, M extends TenantApiMethod> (cmd: Command, method: M, req: Partial<TenantApiRequests[M]>, direct: () => Promise<T>): Promise<T> {
  return await tenantApiOr(cmd, async (api) => await api.call<M, T>(method, req), direct)
}
