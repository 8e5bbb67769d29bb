// The metadata store: typed operations over ZooKeeper for cluster config, storage nodes, agents,
// disks and placement. Ephemerals held here are re-created when the session is replaced
// (ephemerals.ts).
// The ZooKeeper client is private to src/meta: callers elsewhere get typed methods and session
// events (onSession, onExpired, isConnected); test/meta-boundary.test.ts keeps it that way.
// One class in three files, each building on the one before: the session, config, ephemerals and
// background reports (meta-session.ts); nodes and agents (host-records.ts); here the disks and
// what hangs under a disk's znode (segments, snapshots, lease, relocation, scrub) and the
// hosts' round-trip reports.
import { UkaiError, isUkaiError } from '../errors'
import type { Logger } from '../log'
import { PlacementSegment } from './placement'
import {
  DiskRecord, FenceRecord, LeaseRecord, OpenRecord, RelocationRecord, RttReport, ScrubRecord,
  SnapshotRecord, SnapshotRequest, checkRelocationRecord, decodeJson, encodeJson, paths
} from './schema'
import { Watcher, ZkClient, ZkOp } from './zk-client'
import type { ZkAuth } from './credentials'
import { withLedger } from './tenant-ledger'
import { decodeSegment, encodeSegment } from './segment-codec'
import { HostRecords } from './host-records'
import { BACKGROUND_REPORT_TIMEOUT_MS } from './meta-session'

export type { AgentView, NodeView } from './host-records'

// The connect deadline's default, for the CLI's --help (the client itself stays in src/meta).
export { ZK_CONNECT_TIMEOUT_MS_DEFAULT, ZK_SESSION_TIMEOUT_MS_DEFAULT } from './zk-client'

// The ZooKeeper client behind a MetaStore, for the other files of src/meta (lease.ts) only;
// test/meta-boundary.test.ts fails when a file outside src/meta calls it.
let zkOfStore: (meta: MetaStore) => ZkClient
export function zkOf (meta: MetaStore): ZkClient { return zkOfStore(meta) }

export class MetaStore extends HostRecords {
  // auth: the cluster's credentials (src/meta/credentials.ts), or null for world-open znodes.
  static async connect (connectString: string, opts: { auth: ZkAuth | null, logger?: Logger, connectTimeoutMs?: number, sessionTimeoutMs?: number }): Promise<MetaStore> {
    const zk = new ZkClient({ connectString, ...opts })
    await zk.ready()
    const store = new MetaStore(zk, opts.logger)
    await store.init()
    return store
  }

  static { zkOfStore = (meta) => meta.zk }

  // --- disks --------------------------------------------------------------------------------

  // One transaction: the disk appears whole or not at all.
  async createDisk (rec: DiskRecord, segments: PlacementSegment[]): Promise<void> {
    const ops: ZkOp[] = [
      { op: 'create', path: paths.disk(rec.name), data: encodeJson(rec) },
      { op: 'create', path: paths.fence(rec.name), data: encodeJson({ v: 1, leaseEpoch: 0 } satisfies FenceRecord) },
      { op: 'create', path: paths.opens(rec.name), data: Buffer.alloc(0) },
      { op: 'create', path: paths.segments(rec.name), data: Buffer.alloc(0) },
      { op: 'create', path: paths.snapshots(rec.name), data: Buffer.alloc(0) },
      ...segments.map((s): ZkOp => ({ op: 'create', path: paths.segment(rec.name, s.index), data: encodeSegment(s) }))
    ]
    // The tenant's ledger in the same transaction: its quota holds against a concurrent create.
    await withLedger(this.zk, rec.tenant, { capacityBytes: rec.sizeBytes, disks: 1 }, `creating disk '${rec.name}'`, async (ledger) => {
      try {
        await this.zk.multi([...ops, ...ledger])
      } catch (err) {
        if ((err as UkaiError).code === 'ALREADY_EXISTS' && await this.zk.exists(paths.disk(rec.name)) !== null) throw UkaiError.alreadyExists(`disk '${rec.name}' already exists`)
        throw err
      }
    })
    for (const s of segments) s.version = 0
  }

  async getDisk (name: string, watch?: Watcher): Promise<DiskRecord & { version: number }> {
    const got = await this.zk.getOrNull(paths.disk(name), watch)
    if (got === null) throw UkaiError.notFound(`unknown disk '${name}'`)
    return { ...decodeJson<DiskRecord>(got.data, `disk ${name}`), version: got.stat.version }
  }

  async listDiskNames (watch?: Watcher): Promise<string[]> {
    return await this.zk.children(paths.disks, watch)
  }

  async listDisks (): Promise<DiskRecord[]> {
    const out: DiskRecord[] = []
    for (const name of await this.listDiskNames()) {
      try {
        out.push(await this.getDisk(name))
      } catch (err) {
        if ((err as UkaiError).code !== 'NOT_FOUND') throw err // deleted meanwhile
      }
    }
    return out
  }

  // Grows a disk: the record and the new or extended segments change in one transaction (with
  // the tenant's ledger when it grows by `grownBytes`).
  async updateDisk (rec: DiskRecord, recVersion: number, changed: PlacementSegment[], added: PlacementSegment[], grownBytes = 0): Promise<void> {
    const ops: ZkOp[] = [
      { op: 'set', path: paths.disk(rec.name), data: encodeJson(rec), version: recVersion },
      ...changed.map((s): ZkOp => ({ op: 'set', path: paths.segment(rec.name, s.index), data: encodeSegment(s), version: s.version })),
      ...added.map((s): ZkOp => ({ op: 'create', path: paths.segment(rec.name, s.index), data: encodeSegment(s) }))
    ]
    if (grownBytes === 0) { await this.zk.multi(ops); return }
    await withLedger(this.zk, rec.tenant, { capacityBytes: grownBytes }, `growing disk '${rec.name}'`, async (ledger) => { await this.zk.multi([...ops, ...ledger]) })
  }

  // Replaces the record if it is still at `recVersion` (else ZK_CONFLICT); returns the new version.
  async setDiskRecord (rec: DiskRecord, recVersion: number): Promise<number> {
    return (await this.zk.set(paths.disk(rec.name), encodeJson(rec), recVersion)).version
  }

  // Removes the disk's metadata, its snapshot records included (the caller decides whether
  // snapshots and clones allow it).
  async removeDisk (name: string): Promise<void> {
    const segs = await this.zk.children(paths.segments(name))
    const snaps = await this.snapshotNames(name)
    const opens = await this.zk.children(paths.opens(name))
    if (opens.length > 0) throw UkaiError.busy(`disk '${name}' is open on ${opens.join(', ')}; close it first`)
    if (await this.zk.exists(paths.lease(name)) !== null) throw UkaiError.busy(`disk '${name}' is open for write; close it first`)
    const disk = await this.getDisk(name)
    const ops: ZkOp[] = [
      ...segs.map((i): ZkOp => ({ op: 'remove', path: paths.segment(name, Number(i)) })),
      { op: 'remove', path: paths.segments(name) },
      ...snaps.map((snap): ZkOp => ({ op: 'remove', path: paths.snapshot(name, snap) })),
      ...(await this.zk.exists(paths.snapshots(name)) !== null ? [{ op: 'remove', path: paths.snapshots(name) } as ZkOp] : []),
      ...(await this.zk.exists(paths.relocation(name)) !== null ? [{ op: 'remove', path: paths.relocation(name) } as ZkOp] : []),
      ...(await this.zk.exists(paths.scrub(name)) !== null ? [{ op: 'remove', path: paths.scrub(name) } as ZkOp] : []),
      { op: 'remove', path: paths.opens(name) },
      { op: 'remove', path: paths.fence(name) },
      { op: 'remove', path: paths.disk(name), version: disk.version } // the size freed below is this record's
    ]
    try {
      await withLedger(this.zk, disk.tenant, { capacityBytes: -disk.sizeBytes, disks: -1, snapshots: -snaps.length }, `deleting disk '${name}'`, async (ledger) => { await this.zk.multi([...ops, ...ledger]) })
    } catch (err) {
      // A handle opened, or the lease was taken, between the checks and the transaction.
      if ((err as UkaiError).code === 'BUSY') throw UkaiError.busy(`disk '${name}' was opened while deleting it; nothing was deleted`)
      throw err
    }
  }

  // This host's open record of the disk (an ephemeral, see holdEphemeral for `waitMs`).
  async holdOpenRecord (disk: string, rec: OpenRecord, opts: { waitMs?: number } = {}): Promise<void> {
    await this.holdEphemeral(paths.open(disk, rec.host), () => encodeJson(rec), opts)
  }

  async dropOpenRecord (disk: string, host: string): Promise<void> {
    await this.dropEphemeral(paths.open(disk, host))
  }

  async listOpens (name: string): Promise<string[]> {
    return await this.zk.children(paths.opens(name))
  }

  // --- snapshots ----------------------------------------------------------------------------

  // Snapshot names of a disk; [] for a disk created before snapshots existed.
  private async snapshotNames (disk: string, watch?: Watcher): Promise<string[]> {
    try {
      return await this.zk.children(paths.snapshots(disk), watch)
    } catch (err) {
      if ((err as UkaiError).code !== 'NOT_FOUND') throw err
      if (await this.zk.exists(paths.disk(disk)) === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
      return []
    }
  }

  // The disk's snapshots, oldest (lowest epoch) first. NOT_FOUND for an unknown disk.
  async listSnapshots (disk: string, watch?: Watcher): Promise<SnapshotRecord[]> {
    const out: SnapshotRecord[] = []
    for (const snap of await this.snapshotNames(disk, watch)) {
      const got = await this.zk.getOrNull(paths.snapshot(disk, snap))
      if (got !== null) out.push(decodeJson<SnapshotRecord>(got.data, `snapshot ${disk}@${snap}`))
    }
    return out.sort((a, b) => a.epoch - b.epoch)
  }

  async getSnapshot (disk: string, snap: string): Promise<SnapshotRecord> {
    const got = await this.zk.getOrNull(paths.snapshot(disk, snap))
    if (got === null) {
      if (await this.zk.exists(paths.disk(disk)) === null) throw UkaiError.notFound(`unknown disk '${disk}'`)
      throw UkaiError.notFound(`disk '${disk}' has no snapshot '${snap}' (see 'ukai snapshot list ${disk}')`)
    }
    return decodeJson<SnapshotRecord>(got.data, `snapshot ${disk}@${snap}`)
  }

  // The commit, one transaction: snapshot record at the disk's current epoch, disk epoch + 1 —
  // conditional on the disk record version read and on the lease znode the committer holds
  // (so nobody else can be writing at the old epoch), and removing the request it answers.
  async commitSnapshot (disk: DiskRecord & { version: number }, snap: string, opts: { leaseVersion: number, requestVersion?: number, origin?: SnapshotRecord['origin'] }): Promise<SnapshotRecord> {
    const rec: SnapshotRecord = { v: 1, disk: disk.name, name: snap, epoch: disk.epoch, sizeBytes: disk.sizeBytes, blockSizeBytes: disk.blockSizeBytes, createdAtMs: Date.now() }
    if (opts.origin !== undefined) rec.origin = opts.origin
    const next: DiskRecord = { ...disk, epoch: disk.epoch + 1 }
    delete (next as Partial<DiskRecord & { version: number }>).version
    const ops: ZkOp[] = [
      { op: 'check', path: paths.lease(disk.name), version: opts.leaseVersion },
      { op: 'set', path: paths.disk(disk.name), data: encodeJson(next), version: disk.version },
      ...(await this.zk.exists(paths.snapshots(disk.name)) === null ? [{ op: 'create', path: paths.snapshots(disk.name), data: Buffer.alloc(0) } as ZkOp] : []),
      { op: 'create', path: paths.snapshot(disk.name, snap), data: encodeJson(rec) },
      ...(opts.requestVersion !== undefined ? [{ op: 'remove', path: paths.snapshotRequest(disk.name), version: opts.requestVersion } as ZkOp] : [])
    ]
    try {
      await withLedger(this.zk, disk.tenant, { snapshots: 1 }, `snapshot ${disk.name}@${snap}`, async (ledger) => { await this.zk.multi([...ops, ...ledger]) })
    } catch (err) {
      if ((err as UkaiError).code === 'ALREADY_EXISTS' && await this.zk.exists(paths.snapshot(disk.name, snap)) !== null) throw UkaiError.alreadyExists(`disk '${disk.name}' already has a snapshot '${snap}'`)
      throw err
    }
    return rec
  }

  async removeSnapshot (disk: string, snap: string): Promise<void> {
    try {
      const { tenant } = await this.getDisk(disk)
      await withLedger(this.zk, tenant, { snapshots: -1 }, `deleting snapshot ${disk}@${snap}`, async (ledger) => { await this.zk.multi([{ op: 'remove', path: paths.snapshot(disk, snap) }, ...ledger]) })
    } catch (err) {
      if ((err as UkaiError).code === 'NOT_FOUND') throw UkaiError.notFound(`disk '${disk}' has no snapshot '${snap}'`)
      throw err
    }
  }

  // Disks cloned from `disk` (from one snapshot of it when given).
  async listClones (disk: string, snapshot?: string): Promise<DiskRecord[]> {
    return (await this.listDisks()).filter(d => d.parent !== null && d.parent.disk === disk && (snapshot === undefined || d.parent.snapshot === snapshot))
  }

  // Whether anyone (this host included) holds the disk's write lease.
  async leaseHeldAnywhere (disk: string): Promise<boolean> {
    return await this.zk.exists(paths.lease(disk)) !== null
  }

  // The disk's lease record and its znode's version; null when nobody holds the lease.
  async getLease (disk: string): Promise<(LeaseRecord & { version: number }) | null> {
    const got = await this.zk.getOrNull(paths.lease(disk))
    return got === null ? null : { ...decodeJson<LeaseRecord>(got.data, `lease of ${disk}`), version: got.stat.version }
  }

  // The lease znode's version when it carries `leaseEpoch` (we hold it), else null.
  async leaseVersion (disk: string, leaseEpoch: number): Promise<number | null> {
    const got = await this.zk.getOrNull(paths.lease(disk))
    if (got === null || decodeJson<LeaseRecord>(got.data, `lease of ${disk}`).leaseEpoch !== leaseEpoch) return null
    return got.stat.version
  }

  async getSnapshotRequest (disk: string, watch?: Watcher): Promise<(SnapshotRequest & { version: number }) | null> {
    const got = await this.zk.getOrNull(paths.snapshotRequest(disk), watch)
    return got === null ? null : { ...decodeJson<SnapshotRequest>(got.data, `snapshot request of ${disk}`), version: got.stat.version }
  }

  // Ephemeral: a request whose CLI died disappears with its session.
  async createSnapshotRequest (disk: string, req: SnapshotRequest): Promise<void> {
    try {
      await this.zk.create(paths.snapshotRequest(disk), encodeJson(req), { ephemeral: true })
    } catch (err) {
      if ((err as UkaiError).code === 'ALREADY_EXISTS') throw UkaiError.busy(`a snapshot of disk '${disk}' is being taken right now; try again`)
      if ((err as UkaiError).code === 'NOT_FOUND') throw UkaiError.notFound(`unknown disk '${disk}'`)
      throw err
    }
  }

  // The holder refuses a request: it stays (the requester removes it) and carries the reason.
  async failSnapshotRequest (disk: string, req: SnapshotRequest & { version: number }, err: Error): Promise<void> {
    const { version, ...rest } = req
    await this.zk.set(paths.snapshotRequest(disk), encodeJson({ ...rest, error: err.message, ...(isUkaiError(err) ? { errorCode: err.code } : {}) }), version)
  }

  async removeSnapshotRequest (disk: string): Promise<void> {
    await this.zk.remove(paths.snapshotRequest(disk)).catch((err) => { if ((err as UkaiError).code !== 'NOT_FOUND') throw err })
  }

  // --- relocation and round trips -----------------------------------------------------------

  async getRelocation (name: string, watch?: Watcher): Promise<(RelocationRecord & { version: number }) | null> {
    const got = await this.zk.getOrNull(paths.relocation(name), watch)
    if (got === null) return null
    const rec = checkRelocationRecord(decodeJson<RelocationRecord>(got.data, `relocation of ${name}`), name, (why) => {
      this.log.warn({ disk: name, why }, 'ignoring part of a damaged relocation record: the copy starts at its rate')
    })
    return { ...rec, version: got.stat.version }
  }

  async createRelocation (rec: RelocationRecord): Promise<void> {
    try {
      await this.zk.create(paths.relocation(rec.disk), encodeJson(rec))
    } catch (err) {
      if ((err as UkaiError).code === 'ALREADY_EXISTS') throw UkaiError.busy(`disk '${rec.disk}' already has a relocation; see 'ukai relocate status ${rec.disk}' or cancel it`)
      throw err
    }
  }

  // Conditional on the version read; returns the new version.
  async updateRelocation (rec: RelocationRecord, version: number): Promise<number> {
    return (await this.zk.set(paths.relocation(rec.disk), encodeJson(rec), version)).version
  }

  async getScrubRecord (name: string): Promise<ScrubRecord | null> {
    const got = await this.zk.getOrNull(paths.scrub(name))
    return got === null ? null : decodeJson<ScrubRecord>(got.data, `scrub record of ${name}`)
  }

  // Last writer wins: two scrubs of one disk at once only race for the counts they show.
  async putScrubRecord (name: string, rec: ScrubRecord): Promise<void> {
    await this.zk.set(paths.scrub(name), encodeJson(rec), -1).catch(async (err) => {
      if ((err as UkaiError).code !== 'NOT_FOUND') throw err
      await this.zk.create(paths.scrub(name), encodeJson(rec))
    })
  }

  async removeRelocation (name: string): Promise<void> {
    await this.zk.remove(paths.relocation(name)).catch((err) => { if ((err as UkaiError).code !== 'NOT_FOUND') throw err })
  }

  // A background report (see quietly()): never throws, never waits long for ZooKeeper.
  async publishRtt (report: RttReport): Promise<void> {
    const path = paths.rtt(report.host)
    await this.quietly('round-trip report', async () => {
      if (this.ephemerals.has(path)) {
        this.ephemerals.replaceData(path, () => encodeJson(report))
        await this.zk.set(path, encodeJson(report), -1, { timeoutMs: BACKGROUND_REPORT_TIMEOUT_MS }).catch(async (err) => {
          if ((err as UkaiError).code !== 'NOT_FOUND') throw err
          await this.holdEphemeral(path, () => encodeJson(report))
        })
      } else {
        await this.holdEphemeral(path, () => encodeJson(report))
      }
    })
  }

  // One host's report (round trips and I/O counters); null when it has none (or an empty one).
  async getRtt (host: string, watch?: Watcher): Promise<RttReport | null> {
    const got = await this.zk.getOrNull(paths.rtt(host), watch)
    return got === null || got.data.length === 0 ? null : decodeJson<RttReport>(got.data, `round trips of ${host}`)
  }

  // The hosts that publish a report.
  async listRttHosts (watch?: Watcher): Promise<string[]> {
    return await this.zk.children(paths.rtts, watch)
  }

  async listRtts (): Promise<RttReport[]> {
    const out: RttReport[] = []
    for (const host of await this.zk.children(paths.rtts)) {
      const got = await this.zk.getOrNull(paths.rtt(host))
      if (got !== null) out.push(decodeJson<RttReport>(got.data, `round trips of ${host}`))
    }
    return out
  }

  // --- watches for dashboards ---------------------------------------------------------------
  // Each sets one ZooKeeper watch (it fires once) on a piece of state that has no reader above.

  // The list of registered storage nodes changes.
  async watchNodeList (watch: Watcher): Promise<void> { await this.zk.children(paths.nodes, watch) }

  // The list of live storage nodes changes.
  async watchAliveNodeList (watch: Watcher): Promise<void> { await this.zk.children(paths.nodesAlive, watch) }

  // A node's liveness record changes or goes.
  async watchNodeAlive (id: string, watch: Watcher): Promise<void> { await this.zk.exists(paths.nodeAlive(id), watch) }

  // A placement segment is rewritten.
  async watchSegment (disk: string, index: number, watch: Watcher): Promise<void> { await this.zk.exists(paths.segment(disk, index), watch) }

  // The disk's lease is taken, handed over or released.
  async watchLease (disk: string, watch: Watcher): Promise<void> { await this.zk.exists(paths.lease(disk), watch) }

  // --- placement ----------------------------------------------------------------------------

  async loadSegment (name: string, index: number, watch?: Watcher): Promise<PlacementSegment> {
    const got = await this.zk.get(paths.segment(name, index), watch)
    const seg = decodeSegment(index, got.data)
    seg.version = got.stat.version
    return seg
  }

  async loadPlacement (disk: DiskRecord, watch?: (index: number) => void): Promise<PlacementSegment[]> {
    const count = Math.ceil(Math.ceil(disk.sizeBytes / disk.blockSizeBytes) / disk.segmentBlocks)
    // Pipelined: one round trip for the whole map instead of one per segment.
    return await Promise.all(Array.from({ length: count }, async (_, i) => await this.loadSegment(disk.name, i, watch ? () => watch(i) : undefined)))
  }

  // Conditional on the version the segment was read at; bumps it on success. `fenceVersion`:
  // also conditional on the disk's fence znode still being at that version (no newer lease
  // epoch taken since; see disk-map.ts).
  async writeSegments (name: string, segments: PlacementSegment[], opts: { fenceVersion?: number } = {}): Promise<void> {
    const ops = segments.map((s): ZkOp => ({ op: 'set', path: paths.segment(name, s.index), data: encodeSegment(s), version: s.version }))
    if (opts.fenceVersion !== undefined) ops.push({ op: 'check', path: paths.fence(name), version: opts.fenceVersion })
    await this.zk.multi(ops)
    for (const s of segments) s.version++
  }

  // The version of the disk's fence znode: it moves with every lease epoch handed out.
  async fenceVersion (name: string): Promise<number> {
    return (await this.zk.get(paths.fence(name))).stat.version
  }

  async segmentSizes (name: string): Promise<number> {
    let total = 0
    for (const i of await this.zk.children(paths.segments(name))) total += (await this.zk.get(paths.segment(name, Number(i)))).data.length
    return total + (await this.zk.get(paths.disk(name))).data.length
  }
}
