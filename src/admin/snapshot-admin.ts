// Snapshot verbs: create (commit), delete (with garbage collection on the nodes), rollback.
// Used by the CLI. Every check runs before anything changes; a refused request changes nothing.
//
// Commit protocol (docs/architecture.md "Snapshots"): the epoch may only move under the disk's
// lease, because the lease holder writes at its cached epoch. If an agent holds the lease, we
// leave a request znode; the holder gates and drains its writes, flushes, and commits in one
// conditional transaction (snapshot record + epoch + 1 + request removed). If nobody holds it,
// we take the lease ourselves (which fences every node), commit, and release.
import { UkaiError, isUkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { LeaseManager, readLease } from '../meta/lease'
import { DiskRecord, SnapshotRecord, validateDiskName, validateSnapshotName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { checkTenantRoom } from '../meta/tenants'
import { NodePool } from '../vdisk/node-pool'
import { AdminContext, withDiskLease } from './admin-lease'
import { flattenClone } from './clone-admin'
import { sleep } from '../lib/timers'

export const SNAPSHOT_COMMIT_TIMEOUT_MS_DEFAULT = 30_000
const POLL_MS = 5

export async function createSnapshot (ctx: AdminContext, diskName: string, snap: string, opts: { timeoutMs?: number } = {}): Promise<SnapshotRecord> {
  validateDiskName(diskName)
  validateSnapshotName(snap)
  const meta = ctx.meta
  const rec = await meta.getDisk(diskName)  // NOT_FOUND for an unknown disk
  if ((await meta.listSnapshots(diskName)).some(s => s.name === snap)) throw UkaiError.alreadyExists(`disk '${diskName}' already has a snapshot '${snap}'`)
  // Before the lease is taken (it fences the nodes): a tenant at its snapshot quota changes
  // nothing. The commit checks again, atomically (src/meta/tenant-ledger.ts).
  await checkTenantRoom(meta, rec.tenant, { snapshots: 1 }, `snapshot ${diskName}@${snap}`)
  const deadline = Date.now() + (opts.timeoutMs ?? SNAPSHOT_COMMIT_TIMEOUT_MS_DEFAULT)
  for (;;) {
    const lease = await readLease(meta, diskName)
    if (lease.holder === null) {
      try {
        return await commitUnderOwnLease(ctx, diskName, snap)
      } catch (err) {
        // An agent took the lease between our look and our commit: ask it instead.
        if (!isUkaiError(err, 'ZK_CONFLICT') || Date.now() >= deadline) throw err
        continue
      }
    }
    const holder = lease.holder
    await meta.createSnapshotRequest(diskName, { v: 1, snapshot: snap, host: ctx.host, requestedAtMs: Date.now() })
    try {
      for (;;) {
        const req = await meta.getSnapshotRequest(diskName)
        if (req === null) return await meta.getSnapshot(diskName, snap)  // the holder committed it
        if (req.error !== undefined) throw new UkaiError(req.errorCode ?? (/already has a snapshot/.test(req.error) ? 'ALREADY_EXISTS' : 'IO_ERROR'), `${holder.host} (holding the lease of '${diskName}') refused the snapshot: ${req.error}`)
        const now = await readLease(meta, diskName)
        if (now.holder === null || now.holder.leaseEpoch !== holder.leaseEpoch) break  // released or moved: look again
        if (Date.now() >= deadline) {
          throw UkaiError.unavailable(`${holder.host} holds the lease of '${diskName}' but did not commit the snapshot within ${opts.timeoutMs ?? SNAPSHOT_COMMIT_TIMEOUT_MS_DEFAULT} ms; nothing was committed`)
        }
        await sleep(POLL_MS)
      }
    } finally {
      // Removing it makes a late commit by the holder fail (its transaction removes the request).
      await meta.removeSnapshotRequest(diskName)
    }
    try {
      return await meta.getSnapshot(diskName, snap)  // committed just before the holder let go
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
    }
  }
}

// Nobody writes the disk: take its lease (one transaction: fence epoch + 1, lease znode), fence
// the nodes holding it (a writer whose session expired cannot land a write at the old epoch
// afterwards), commit, release. Touches ZooKeeper a fixed number of times plus one pipelined
// read of the placement (kilobytes for 1 TiB): no per-block work.
async function commitUnderOwnLease (ctx: AdminContext, diskName: string, snap: string): Promise<SnapshotRecord> {
  const meta = ctx.meta
  const log = ctx.logger ?? silentLogger
  const pool = new NodePool(meta, { host: ctx.host, site: '', logger: log })
  const leases = new LeaseManager(meta, ctx.host, { onHandoverRequested: () => {}, onLost: () => {} }, { logger: log })
  await pool.start()
  try {
    const lease = await leases.acquire(diskName)
    try {
      const disk = await meta.getDisk(diskName)
      // Then flush: what a previous holder wrote and never fsynced becomes durable before it is
      // committed (best effort: a node that cannot be reached keeps what it has, as before).
      await Promise.all((await nodesOf(meta, disk)).map(async (node) => {
        try {
          const client = pool.client(node)
          await client.fence({ diskUuid: disk.uuid, leaseEpoch: lease.leaseEpoch })
          await client.flush({ diskUuid: disk.uuid, leaseEpoch: lease.leaseEpoch })
        } catch (err) {
          log.warn({ node, err: String(err) }, 'could not fence and flush node')
        }
      }))
      const leaseVersion = await meta.leaseVersion(diskName, lease.leaseEpoch)
      if (leaseVersion === null) throw UkaiError.conflict(`the lease of ${diskName} moved while committing the snapshot`)
      return await meta.commitSnapshot(disk, snap, { leaseVersion })
    } finally {
      await leases.release(diskName)
    }
  } finally {
    await pool.close()
  }
}

// Every node named in the disk's placement map.
async function nodesOf (meta: MetaStore, disk: DiskRecord): Promise<string[]> {
  const nodes = new Set<string>()
  for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) nodes.add(r.node)
  return [...nodes]
}

export interface PruneResult { freedBytes: number, versionsRemoved: number, unreachable: string[] }

// Asks every node of the disk to drop the versions no kept epoch needs (see PruneVersions).
// `leaseEpoch`: 0 for garbage collection; the held lease's epoch for a rollback (fenced).
export async function pruneOnNodes (meta: MetaStore, pool: NodePool, disk: DiskRecord, keepEpochs: number[], dropNewer: boolean, leaseEpoch: number, log: Logger = silentLogger): Promise<PruneResult> {
  const out: PruneResult = { freedBytes: 0, versionsRemoved: 0, unreachable: [] }
  await Promise.all((await nodesOf(meta, disk)).map(async (node) => {
    try {
      const r = await pool.client(node).pruneVersions({ diskUuid: disk.uuid, keepEpochs, dropNewer, leaseEpoch })
      out.freedBytes += r.freedBytes
      out.versionsRemoved += r.versionsRemoved
    } catch (err) {
      out.unreachable.push(node)
      log.warn({ node, disk: disk.name, err: String(err) }, 'could not prune versions on node')
    }
  }))
  return out
}

// The epochs whose state must stay readable: every snapshot and the head. The head is read
// first: a snapshot committed meanwhile then shows up in the list (its epoch is the old head).
export async function keptEpochs (meta: MetaStore, name: string): Promise<{ disk: DiskRecord, keep: number[] }> {
  const disk = await meta.getDisk(name)
  const snaps = await meta.listSnapshots(name)
  return { disk, keep: [...new Set([...snaps.map(s => s.epoch), disk.epoch])] }
}

export async function deleteSnapshot (ctx: AdminContext, diskName: string, snap: string, opts: { flattenClones?: boolean, onFlattenProgress?: (done: number, total: number) => void } = {}): Promise<PruneResult & { flattened: string[] }> {
  validateDiskName(diskName)
  validateSnapshotName(snap)
  const meta = ctx.meta
  await meta.getSnapshot(diskName, snap)
  const clones = await meta.listClones(diskName, snap)
  if (clones.length > 0 && opts.flattenClones !== true) {
    throw UkaiError.busy(`snapshot '${diskName}@${snap}' has ${clones.length === 1 ? 'a clone' : 'clones'} ${clones.map(c => c.name).join(', ')} reading through to it; delete them, or pass --flatten-clones to copy what they need first`)
  }
  for (const c of clones) await flattenClone(ctx, c.name, opts.onFlattenProgress)
  await meta.removeSnapshot(diskName, snap)
  const { disk, keep } = await keptEpochs(meta, diskName)
  const pool = new NodePool(meta, { host: ctx.host, site: '', logger: ctx.logger })
  await pool.start()
  try {
    return { ...await pruneOnNodes(meta, pool, disk, keep, false, 0, ctx.logger), flattened: clones.map(c => c.name) }
  } finally {
    await pool.close()
  }
}

// Makes the head read as the snapshot again: drops every version newer than it. Refused while
// the disk is open anywhere, and while newer snapshots exist unless `destroyNewer` (they would
// lose their data; clones of them forbid it outright).
export async function rollbackSnapshot (ctx: AdminContext, diskName: string, snap: string, opts: { destroyNewer?: boolean } = {}): Promise<PruneResult & { destroyed: string[] }> {
  validateDiskName(diskName)
  validateSnapshotName(snap)
  const meta = ctx.meta
  const target = await meta.getSnapshot(diskName, snap)
  const opens = await meta.listOpens(diskName)
  if (opens.length > 0) throw UkaiError.busy(`disk '${diskName}' is open on ${opens.join(', ')}; stop the VM (close the disk) before rolling it back`)
  const lease = await readLease(meta, diskName)
  if (lease.holder !== null) throw UkaiError.busy(`disk '${diskName}' is open for write on ${lease.holder.host}; stop the VM (close the disk) before rolling it back`)
  const newer = (await meta.listSnapshots(diskName)).filter(s => s.epoch > target.epoch)
  if (newer.length > 0 && opts.destroyNewer !== true) {
    throw UkaiError.busy(`disk '${diskName}' has ${newer.length === 1 ? 'a snapshot' : 'snapshots'} newer than '${snap}' (${newer.map(s => s.name).join(', ')}); rolling back would destroy them — pass --destroy-newer`)
  }
  for (const s of newer) {
    const clones = await meta.listClones(diskName, s.name)
    if (clones.length > 0) throw UkaiError.busy(`snapshot '${diskName}@${s.name}' (newer than '${snap}') has ${clones.length === 1 ? 'a clone' : 'clones'} ${clones.map(c => c.name).join(', ')}; rollback would destroy it`)
  }
  // Holding the lease keeps anyone from writing meanwhile (an agent opening the disk now waits).
  return await withDiskLease(ctx, diskName, async (disk, pool) => {
    for (const s of newer) await meta.removeSnapshot(diskName, s.name)
    const keep = [...new Set([...(await meta.listSnapshots(diskName)).map(s => s.epoch), target.epoch])]
    const res = await pruneOnNodes(meta, pool, disk.record, keep, true, disk.leaseEpoch ?? 0, ctx.logger)
    if (res.unreachable.length > 0) {
      throw UkaiError.unavailable(`rollback of '${diskName}' to '${snap}' is incomplete on nodes ${res.unreachable.join(', ')} (unreachable, or another host took the lease meanwhile); run it again`)
    }
    return { ...res, destroyed: newer.map(s => s.name) }
  })
}
