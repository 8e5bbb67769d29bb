// What a tenant may do, verb by verb: every disk named must be the caller's tenant's (else
// PERMISSION_DENIED naming the disk), a create lands in the caller's tenant only, and a site
// must be one the tenant is allowed (`ukai tenant create --sites`). The work itself is the admin
// path's (src/admin): the same checks, the same atomic quota ledger. Admin certificates may call
// too and are not restricted (an admin's CLI normally goes to ZooKeeper directly).
import { UkaiError } from '../errors'
import type { Logger } from '../log'
import { AdminContext } from '../admin/admin-lease'
import { cloneDisk } from '../admin/clone-admin'
import { createDisk, deleteDisk, resizeDisk } from '../admin/disk-admin'
import { summarizeDisk } from '../admin/disk-summary'
import { diskHealth } from '../admin/health'
import { createSnapshot, deleteSnapshot } from '../admin/snapshot-admin'
import { usedBytesOnce } from '../admin/used-bytes'
import { DiskRecord, TenantRecord, validateDiskName, validateId, validateSnapshotName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { getTenant } from '../meta/tenants'
import { planRelocation } from '../relocate/plan'
import { startRelocation } from '../relocate/start'
import type { Identity } from '../storagenode/identity'
import type { TenantApiMethod, TenantApiRequests } from './wire'

// site: the agent's, where an export or import prefers its storage nodes when the caller names none.
export interface TenantApiDeps { meta: MetaStore, host: string, site?: string, logger: Logger }

type Handler<M extends TenantApiMethod> = (caller: Identity, req: TenantApiRequests[M]) => Promise<unknown>

// The rules every verb applies, unary or streamed (streams.ts).
export interface AccessRules {
  denied: (caller: Identity, what: string) => UkaiError
  // The disk, when the caller may act on it.
  ownDisk: (caller: Identity, name: string, what: string) => Promise<DiskRecord>
  // The tenant a new disk lands in: the caller's; an admin names it.
  tenantFor: (caller: Identity, asked: string, what: string) => string
  // The site to use: the one asked for if the tenant may use it; none asked: its first allowed one.
  siteFor: (caller: Identity, site: string, what: string) => Promise<string | undefined>
}

export function accessRules (meta: MetaStore): AccessRules {
  const denied = (caller: Identity, what: string): UkaiError =>
    UkaiError.permissionDenied(`tenant ${caller.name} may not ${what}`)
  const tenantOf = async (caller: Identity): Promise<TenantRecord | null> => caller.role === 'admin' ? null : await getTenant(meta, caller.name)
  return {
    denied,
    ownDisk: async (caller, name, what) => {
      validateDiskName(name)
      const disk = await meta.getDisk(name)
      if (caller.role !== 'admin' && disk.tenant !== caller.name) throw denied(caller, `${what} disk '${name}': it belongs to another tenant`)
      return disk
    },
    tenantFor: (caller, asked, what) => {
      const tenant = asked === '' ? caller.name : asked
      if (caller.role !== 'admin' && tenant !== caller.name) throw denied(caller, `${what} in tenant '${tenant}'`)
      if (caller.role === 'admin' && asked === '') throw UkaiError.badArgument('an admin creating through the tenant API names the tenant')
      return tenant
    },
    siteFor: async (caller, site, what) => {
      if (site !== '') validateId(site, 'site')
      const allowed = (await tenantOf(caller))?.sites ?? []
      if (allowed.length === 0) return site === '' ? undefined : site
      if (site === '') return allowed[0]
      if (!allowed.includes(site)) throw denied(caller, `${what} at site '${site}' (allowed: ${allowed.join(', ')})`)
      return site
    }
  }
}

export function tenantApiHandlers (deps: TenantApiDeps): { [M in TenantApiMethod]: Handler<M> } {
  const { meta } = deps
  const ctx: AdminContext = { meta, host: deps.host, logger: deps.logger }
  const { ownDisk, tenantFor, siteFor } = accessRules(meta)

  return {
    CreateDisk: async (caller, req) => {
      const tenant = tenantFor(caller, req.tenant, `create disk '${req.name}'`)
      const site = await siteFor(caller, req.site, `create disk '${req.name}'`)
      return await createDisk(meta, {
        name: req.name, sizeBytes: req.sizeBytes, tenant, site,
        ...(req.blockSizeBytes > 0 ? { blockSizeBytes: req.blockSizeBytes } : {}),
        ...(req.replicas > 0 ? { replicas: req.replicas } : {})
      })
    },
    ResizeDisk: async (caller, req) => { await ownDisk(caller, req.disk, 'resize'); return await resizeDisk(meta, req.disk, req.sizeBytes) },
    DeleteDisk: async (caller, req) => { await ownDisk(caller, req.disk, 'delete'); return await deleteDisk(meta, req.disk, { logger: deps.logger, withSnapshots: req.withSnapshots }) },
    DiskInfo: async (caller, req) => { await ownDisk(caller, req.disk, 'read'); return await summarizeDisk(meta, req.disk) },
    ListDisks: async (caller) => {
      const nodes = await meta.listNodes()
      const mine = (await meta.listDisks()).filter(d => caller.role === 'admin' || d.tenant === caller.name)
      const out = []
      for (const d of mine) out.push({ ...d, state: (await diskHealth(meta, d, nodes)).state, usedBytes: await usedBytesOnce(meta, d, nodes) })
      return out
    },
    CreateSnapshot: async (caller, req) => {
      validateSnapshotName(req.snapshot)
      await ownDisk(caller, req.disk, 'snapshot')
      return await createSnapshot(ctx, req.disk, req.snapshot)
    },
    ListSnapshots: async (caller, req) => {
      await ownDisk(caller, req.disk, 'list the snapshots of')
      const clones = await meta.listClones(req.disk)
      return (await meta.listSnapshots(req.disk)).map(s => ({ ...s, clones: clones.filter(c => c.parent?.snapshot === s.name).map(c => c.name) }))
    },
    DeleteSnapshot: async (caller, req) => {
      validateSnapshotName(req.snapshot)
      await ownDisk(caller, req.disk, 'delete a snapshot of')
      return await deleteSnapshot(ctx, req.disk, req.snapshot)
    },
    Clone: async (caller, req) => {
      validateSnapshotName(req.snapshot)
      await ownDisk(caller, req.disk, 'clone')
      const site = req.site === '' ? undefined : await siteFor(caller, req.site, `clone '${req.disk}@${req.snapshot}'`)
      return await cloneDisk(ctx, { disk: req.disk, snapshot: req.snapshot }, req.name, { site })
    },
    Relocate: async (caller, req) => {
      await ownDisk(caller, req.disk, 'relocate')
      if (req.site === '') throw UkaiError.badArgument('say where to: a site')
      const site = await siteFor(caller, req.site, `relocate disk '${req.disk}'`)
      const plan = await planRelocation(meta, { disk: req.disk, site, rateCapBytesPerSec: req.rateBytesPerSec, probeBudgetMs: 0 })
      await startRelocation(meta, plan, req.rateBytesPerSec, { placement: { site } })
      return plan
    }
  }
}
