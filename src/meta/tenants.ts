// Tenants' znodes (/ukai/tenants/<name>, src/meta/schema.ts): create, read, change and remove a
// tenant's record. The ledger inside it moves with every change of its disks (tenant-ledger.ts);
// the verbs around it (checks, the disks a tenant owns) are src/admin/tenant-admin.ts.
import { UkaiError, isUkaiError } from '../errors'
import { DEFAULT_TENANT, TenantRecord, encodeJson, paths } from './schema'
import { MetaStore, zkOf } from './store'
import { UsageDelta, checkQuota, ensureDefaultLedger, ledgerFromScan, readLedger } from './tenant-ledger'

// Attempts of a read-modify-write of a tenant's record that lost a race before giving up.
const TENANT_UPDATE_ATTEMPTS_MAX = 10

// The tenant's record (the default tenant's even before its ledger exists); null: no such tenant.
export async function getTenant (meta: MetaStore, name: string): Promise<TenantRecord | null> {
  return (await readLedger(zkOf(meta), name))?.rec ?? null
}

// Every tenant, the default one first.
export async function listTenants (meta: MetaStore): Promise<TenantRecord[]> {
  const zk = zkOf(meta)
  const names = new Set([DEFAULT_TENANT, ...(await zk.children(paths.tenants))])
  const out: TenantRecord[] = []
  for (const name of names) {
    const got = await readLedger(zk, name)
    if (got !== null) out.push(got.rec)
  }
  return out
}

// A new tenant, its usage counted from the disks that already name it (none, unless disks were
// given this tenant before it was created).
export async function createTenant (meta: MetaStore, name: string, sites: string[]): Promise<TenantRecord> {
  const zk = zkOf(meta)
  const rec: TenantRecord = { ...await ledgerFromScan(zk, name), ...(sites.length > 0 ? { sites } : {}) }
  try {
    await zk.create(paths.tenant(name), encodeJson(rec))
  } catch (err) {
    if (isUkaiError(err, 'ALREADY_EXISTS')) throw UkaiError.alreadyExists(`tenant '${name}' already exists`)
    throw err
  }
  return rec
}

// Read-modify-write of the tenant's record, conditional on the version read: a quota change
// and a create in the tenant cannot lose each other's update.
export async function updateTenant (meta: MetaStore, name: string, change: (cur: TenantRecord) => TenantRecord): Promise<TenantRecord> {
  const zk = zkOf(meta)
  if (name === DEFAULT_TENANT) await ensureDefaultLedger(zk)
  for (let attempt = 1; ; attempt++) {
    const got = await readLedger(zk, name)
    if (got === null) throw UkaiError.notFound(`unknown tenant '${name}' (see 'ukai tenant list')`)
    const next = change(got.rec)
    try {
      await zk.set(paths.tenant(name), encodeJson(next), got.version)
      return next
    } catch (err) {
      if (!isUkaiError(err, 'ZK_CONFLICT') || attempt >= TENANT_UPDATE_ATTEMPTS_MAX) throw err
    }
  }
}

// Removes the tenant's record if `check` (given the record) passes, conditional on the version
// read: a disk created in the tenant meanwhile moves the version, and the check runs again.
export async function removeTenant (meta: MetaStore, name: string, check: (cur: TenantRecord) => Promise<void>): Promise<void> {
  const zk = zkOf(meta)
  for (let attempt = 1; ; attempt++) {
    const got = await zk.getOrNull(paths.tenant(name))
    if (got === null) throw UkaiError.notFound(`unknown tenant '${name}' (see 'ukai tenant list')`)
    const cur = (await readLedger(zk, name))?.rec
    if (cur === undefined) throw UkaiError.notFound(`unknown tenant '${name}'`)
    await check(cur)
    try {
      await zk.remove(paths.tenant(name), got.stat.version)
      return
    } catch (err) {
      if (!isUkaiError(err, 'ZK_CONFLICT') || attempt >= TENANT_UPDATE_ATTEMPTS_MAX) throw err
    }
  }
}

// An early refusal, before work that a later atomic check would undo (an import's data): the
// tenant exists and has room for `delta` now. The change itself is checked again atomically.
export async function checkTenantRoom (meta: MetaStore, tenant: string, delta: UsageDelta, what: string): Promise<void> {
  const got = await readLedger(zkOf(meta), tenant)
  if (got === null) throw UkaiError.notFound(`${what} refused: unknown tenant '${tenant}' (see 'ukai tenant list'; an admin creates it with 'ukai tenant create ${tenant}')`)
  checkQuota(got.rec, delta, what)
}
