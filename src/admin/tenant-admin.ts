// Tenant verbs: create, list (usage against quota), quota, delete. The quotas themselves are
// enforced where disks change, atomically with the change (src/meta/tenant-ledger.ts); this file
// checks what an admin types and says what a refusal is about.
import { UkaiError } from '../errors'
import { DEFAULT_TENANT, DISK_SIZE_MAX_BYTES, TenantQuota, TenantRecord, validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { createTenant, getTenant, listTenants, removeTenant, updateTenant } from '../meta/tenants'

// More disks or snapshots than this in one tenant is a typo, not a quota.
export const TENANT_COUNT_QUOTA_MAX = 10_000_000
// A capacity quota up to 2^50 bytes × 2^20 disks: beyond it, a typo (and still an exact double).
export const TENANT_CAPACITY_QUOTA_MAX_BYTES = DISK_SIZE_MAX_BYTES * 2 ** 20

export type QuotaChange = { [K in keyof TenantQuota]?: number | null }

export function validateTenantName (name: string): void { validateId(name, 'tenant name') }

export function checkQuotaChange (q: QuotaChange): void {
  const check = (value: number | null | undefined, what: string, max: number): void => {
    if (value === undefined || value === null) return
    if (!Number.isSafeInteger(value) || value < 0 || value > max) throw UkaiError.badArgument(`bad ${what} quota ${String(value)}: a whole number from 0 to ${max}, or none`)
  }
  check(q.capacityBytes, 'capacity', TENANT_CAPACITY_QUOTA_MAX_BYTES)
  check(q.disks, 'disks', TENANT_COUNT_QUOTA_MAX)
  check(q.snapshots, 'snapshots', TENANT_COUNT_QUOTA_MAX)
}

export async function createTenantChecked (meta: MetaStore, name: string, opts: { sites?: string[] } = {}): Promise<TenantRecord> {
  validateTenantName(name)
  for (const s of opts.sites ?? []) validateId(s, 'site in --sites')
  if (name === DEFAULT_TENANT) throw UkaiError.alreadyExists(`tenant '${DEFAULT_TENANT}' always exists (disks without --tenant belong to it); give it quotas with 'ukai tenant quota ${DEFAULT_TENANT}'`)
  return await createTenant(meta, name, opts.sites ?? [])
}

export async function tenantInfo (meta: MetaStore, name: string): Promise<TenantRecord> {
  validateTenantName(name)
  const rec = await getTenant(meta, name)
  if (rec === null) throw UkaiError.notFound(`unknown tenant '${name}' (see 'ukai tenant list')`)
  return rec
}

export async function listTenantsWithUsage (meta: MetaStore): Promise<TenantRecord[]> {
  return await listTenants(meta)
}

// Sets the quotas given (null: no limit) and keeps the others. A quota below what the tenant
// already uses is allowed: nothing is taken away, but nothing more grows until it is back under.
export async function setTenantQuota (meta: MetaStore, name: string, change: QuotaChange): Promise<TenantRecord> {
  validateTenantName(name)
  checkQuotaChange(change)
  if (Object.values(change).every(v => v === undefined)) throw UkaiError.badArgument('give at least one of --capacity, --disks, --snapshots')
  return await updateTenant(meta, name, (cur) => ({
    ...cur,
    quota: {
      capacityBytes: change.capacityBytes !== undefined ? change.capacityBytes : cur.quota.capacityBytes,
      disks: change.disks !== undefined ? change.disks : cur.quota.disks,
      snapshots: change.snapshots !== undefined ? change.snapshots : cur.quota.snapshots
    }
  }))
}

// Refused while any disk names the tenant (they are named); the default tenant is never deleted.
export async function deleteTenantChecked (meta: MetaStore, name: string): Promise<void> {
  validateTenantName(name)
  if (name === DEFAULT_TENANT) throw UkaiError.badArgument(`tenant '${DEFAULT_TENANT}' cannot be deleted: disks without a tenant belong to it`)
  // A disk created in the tenant after the scan moves the ledger's version: the removal fails
  // and the scan runs again.
  await removeTenant(meta, name, async () => {
    const owned = (await meta.listDisks()).filter(d => d.tenant === name).map(d => d.name)
    if (owned.length > 0) throw UkaiError.busy(`tenant '${name}' owns ${owned.length === 1 ? 'disk' : 'disks'} ${owned.join(', ')}; delete them first (nothing was changed)`)
  })
}
