// The tenant ledger: every change to what a tenant's disks provision (a create, clone, import,
// resize, snapshot, delete) reads the tenant's znode, checks the quota against usage + delta, and
// puts the new usage back *in the same ZooKeeper transaction* as the change, conditional on the
// version it read. Two creates racing for the last of a quota both read version n; the first
// transaction moves the znode to n+1, the second fails BAD_VERSION as a whole (its disk is not
// created), re-reads, and is refused by the quota. Counters in one znode rather than a scan of the
// tenant's disks at every create: a create stays a fixed number of ZooKeeper round trips whatever
// the number of disks, and the agent's snapshot commit (its writes gated meanwhile) does not list
// every disk. The scan runs once, when the default tenant's ledger is first made
// (ledgerFromScan). Used by src/meta/store.ts (the transactions) and src/meta/tenants.ts.
import { UkaiError, isUkaiError } from '../errors'
import { formatBytes } from '../units'
import { DEFAULT_TENANT, DiskRecord, TenantRecord, TenantUsage, decodeJson, encodeJson, paths } from './schema'
import type { ZkClient, ZkOp } from './zk-client'

// Attempts of a transaction whose ledger moved under it (another change of the same tenant)
// before giving up; each attempt re-reads the ledger, so only a storm of changes exhausts it.
const LEDGER_ATTEMPTS_MAX = 20

export type UsageDelta = Partial<TenantUsage>

export function decodeTenant (data: Buffer, name: string): TenantRecord {
  return decodeJson<TenantRecord>(data, `tenant ${name}`)
}

// The ledger of the default tenant when it has none yet: what its disks provision now.
export async function ledgerFromScan (zk: ZkClient, name: string): Promise<TenantRecord> {
  const usage: TenantUsage = { capacityBytes: 0, disks: 0, snapshots: 0 }
  for (const disk of await zk.children(paths.disks)) {
    const got = await zk.getOrNull(paths.disk(disk))
    if (got === null) continue
    const rec = decodeJson<DiskRecord>(got.data, `disk ${disk}`)
    if ((rec.tenant ?? DEFAULT_TENANT) !== name) continue
    usage.disks++
    usage.capacityBytes += rec.sizeBytes
    usage.snapshots += (await zk.children(paths.snapshots(disk)).catch((err) => { if (isUkaiError(err, 'NOT_FOUND')) return []; throw err })).length
  }
  return { v: 1, name, createdAtMs: Date.now(), quota: { capacityBytes: null, disks: null, snapshots: null }, usage }
}

// The tenant's ledger and its znode's version; for the default tenant with none yet, one made
// from a scan (version -1: not there). null: no such tenant.
export async function readLedger (zk: ZkClient, name: string): Promise<{ rec: TenantRecord, version: number } | null> {
  const got = await zk.getOrNull(paths.tenant(name))
  if (got !== null) return { rec: decodeTenant(got.data, name), version: got.stat.version }
  if (name !== DEFAULT_TENANT) return null
  return { rec: await ledgerFromScan(zk, name), version: -1 }
}

// Makes the default tenant's ledger if it has none (one already there is kept).
export async function ensureDefaultLedger (zk: ZkClient): Promise<void> {
  if (await zk.exists(paths.tenant(DEFAULT_TENANT)) !== null) return
  try {
    await zk.create(paths.tenant(DEFAULT_TENANT), encodeJson(await ledgerFromScan(zk, DEFAULT_TENANT)))
  } catch (err) {
    if (!isUkaiError(err, 'ALREADY_EXISTS')) throw err
  }
}

function grows (delta: UsageDelta): boolean {
  return (delta.capacityBytes ?? 0) > 0 || (delta.disks ?? 0) > 0 || (delta.snapshots ?? 0) > 0
}

// Refuses a delta that takes usage past a quota, naming the quota; only what grows is checked
// (a delete or a shrink of one dimension is never refused, even over a lowered quota).
export function checkQuota (rec: TenantRecord, delta: UsageDelta, what: string): void {
  const q = rec.quota
  const u = rec.usage
  const fix = `raise it with 'ukai tenant quota ${rec.name} …' or free some first`
  const cap = delta.capacityBytes ?? 0
  if (cap > 0 && q.capacityBytes !== null && u.capacityBytes + cap > q.capacityBytes) {
    throw UkaiError.quotaExceeded(`${what} refused: tenant '${rec.name}' would exceed its capacity quota of ${formatBytes(q.capacityBytes)} (${formatBytes(u.capacityBytes)} provisioned, this needs ${formatBytes(cap)} more); ${fix}`)
  }
  const disks = delta.disks ?? 0
  if (disks > 0 && q.disks !== null && u.disks + disks > q.disks) {
    throw UkaiError.quotaExceeded(`${what} refused: tenant '${rec.name}' would exceed its disks quota of ${q.disks} (it has ${u.disks}); ${fix}`)
  }
  const snaps = delta.snapshots ?? 0
  if (snaps > 0 && q.snapshots !== null && u.snapshots + snaps > q.snapshots) {
    throw UkaiError.quotaExceeded(`${what} refused: tenant '${rec.name}' would exceed its snapshots quota of ${q.snapshots} (it has ${u.snapshots}); ${fix}`)
  }
}

function applied (usage: TenantUsage, delta: UsageDelta): TenantUsage {
  // Never below zero: a ledger made before a disk's snapshots were counted must not go negative.
  const add = (a: number, b: number | undefined): number => Math.max(0, a + (b ?? 0))
  return { capacityBytes: add(usage.capacityBytes, delta.capacityBytes), disks: add(usage.disks, delta.disks), snapshots: add(usage.snapshots, delta.snapshots) }
}

// Runs `commit` with the ledger ops to put in its transaction: the tenant's new usage, written
// conditionally on the version read (or the default ledger created). When the transaction fails
// and the ledger moved meanwhile, the ledger lost a race: read again, check again, commit again.
// A growth of an unknown tenant is refused; a release for a tenant without a ledger has nothing
// to release (no ops).
export async function withLedger<T> (zk: ZkClient, tenant: string, delta: UsageDelta, what: string, commit: (ledgerOps: ZkOp[]) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const ledger = await readLedger(zk, tenant)
    if (ledger === null) {
      if (grows(delta)) throw UkaiError.notFound(`${what} refused: unknown tenant '${tenant}' (see 'ukai tenant list'; an admin creates it with 'ukai tenant create ${tenant}')`)
      return await commit([])
    }
    if (grows(delta)) checkQuota(ledger.rec, delta, what)
    const data = encodeJson({ ...ledger.rec, usage: applied(ledger.rec.usage, delta) })
    const op: ZkOp = ledger.version < 0
      ? { op: 'create', path: paths.tenant(tenant), data }
      : { op: 'set', path: paths.tenant(tenant), data, version: ledger.version }
    try {
      return await commit([op])
    } catch (err) {
      if (attempt >= LEDGER_ATTEMPTS_MAX || !(isUkaiError(err, 'ZK_CONFLICT') || isUkaiError(err, 'ALREADY_EXISTS') || isUkaiError(err, 'NOT_FOUND'))) throw err
      const now = await zk.exists(paths.tenant(tenant))
      if ((now?.version ?? -1) === ledger.version) throw err // the ledger did not move: something else failed
    }
  }
}
