// What the mount lists: every disk's record (its size, owner, mode, xattrs) and every disk's
// snapshots (the read-only `.snapshots` directory), kept current through ZooKeeper watches, so
// getattr and readdir never wait on ZooKeeper (the kernel asks for them on every lookup, and for
// security.capability before every write).
//
// Split from agent.ts so the watched name → record cache has one owner; the agent keeps the open
// engines and tells the catalog what it wrote itself (`note`, `noteResize`, `forget`).
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { DiskRecord, SnapshotRecord, SnapshotRef, formatSnapshotRef, parseSnapshotRef } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { DiskUsage } from './disk-usage'
import { VersionedDiskRecord } from './disk-file-attrs'
import { WarmDisks } from './warm-disks'

export interface DiskCatalogDeps {
  meta: Pick<MetaStore, 'listDiskNames' | 'getDisk' | 'listSnapshots' | 'getSnapshot'>
  usage: Pick<DiskUsage, 'forget'>
  warm: Pick<WarmDisks, 'names' | 'drop'>
  closed: () => boolean
  // A record read or written here: the disk's open engine, if any, adopts it (owner, mode, QoS).
  noted: (rec: VersionedDiskRecord) => void
  // The set of disks, or a disk's owner or mode, may have changed (AgentHooks.disksChanged).
  changed: () => void
}

// A name under .snapshots that is no DISK@NAME simply does not exist (ENOENT, not EINVAL).
export function snapshotFile (ref: string): SnapshotRef {
  try {
    return parseSnapshotRef(ref)
  } catch (err) {
    if (isUkaiError(err, 'BAD_ARGUMENT')) throw UkaiError.notFound(`no snapshot ${ref}`)
    throw err
  }
}

export class DiskCatalog {
  private records = new Map<string, VersionedDiskRecord>()
  // Snapshots per disk, kept current through watches: the read-only `.snapshots` directory.
  private readonly snapshots = new Map<string, SnapshotRecord[]>()
  // Disks whose record and snapshot list are watched. Not `records`: a disk also enters those
  // when made on this mount or stat'ed before the list watch fired, and was then never watched
  // (its snapshots never listed under .snapshots, its record never refreshed).
  private readonly watched = new Set<string>()

  constructor (private readonly deps: DiskCatalogDeps) {}

  get (name: string): VersionedDiskRecord | undefined { return this.records.get(name) }
  has (name: string): boolean { return this.records.has(name) }
  names (): string[] { return [...this.records.keys()].sort() }

  // The cached record, else read now (a disk created elsewhere a moment ago).
  async lookup (name: string): Promise<DiskRecord> {
    const rec = this.records.get(name)
    if (rec !== undefined) return rec
    const fresh = await this.deps.meta.getDisk(name)
    this.note(fresh)
    return fresh
  }

  // Keeps the name → record cache current through watches, so getattr never waits on ZooKeeper.
  async refresh (): Promise<void> {
    if (this.deps.closed()) return
    const names = await this.deps.meta.listDiskNames(() => { this.refresh().catch(safetyCatch) })
    const next = new Map<string, VersionedDiskRecord>()
    await Promise.all(names.map(async (name) => {
      const known = this.records.get(name)
      if (known !== undefined && this.watched.has(name)) { next.set(name, known); return }
      try {
        next.set(name, await this.deps.meta.getDisk(name, () => { this.refreshDisk(name).catch(safetyCatch) }))
        await this.refreshSnapshots(name)
        this.watched.add(name)
      } catch (err) {
        if (!isUkaiError(err, 'NOT_FOUND')) throw err
      }
    }))
    this.records = next
    this.deps.changed()
    for (const name of this.snapshots.keys()) if (!next.has(name)) this.snapshots.delete(name)
    for (const name of this.watched) if (!next.has(name)) { this.watched.delete(name); this.deps.usage.forget(name) }
    for (const name of this.deps.warm.names()) if (!next.has(name)) this.deps.warm.drop(name)
  }

  // Watches die with an expired session: everything is read and watched again on the new one.
  async rewatch (): Promise<void> {
    this.records.clear()
    this.watched.clear()
    await this.refresh()
  }

  private async refreshSnapshots (name: string): Promise<void> {
    if (this.deps.closed()) return
    try {
      this.snapshots.set(name, await this.deps.meta.listSnapshots(name, () => { this.refreshSnapshots(name).catch(safetyCatch) }))
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
      this.snapshots.delete(name)
    }
  }

  private async refreshDisk (name: string): Promise<void> {
    if (this.deps.closed()) return
    try {
      this.note(await this.deps.meta.getDisk(name, () => { this.refreshDisk(name).catch(safetyCatch) }))
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
      this.records.delete(name)
      this.deps.warm.drop(name)
      this.deps.changed()
    }
  }

  // A record read or written here: newer than the cached one wins (a watch-driven re-read and
  // our own update may arrive in either order).
  note (rec: VersionedDiskRecord): void {
    const known = this.records.get(rec.name)
    if (known === undefined || known.version <= rec.version) this.records.set(rec.name, rec)
    this.deps.noted(rec)
    this.deps.changed()
  }

  // Resized here: the record's new version arrives with the watch; until then the size is what counts.
  noteResize (rec: DiskRecord): void {
    this.records.set(rec.name, { ...rec, version: this.records.get(rec.name)?.version ?? 0 })
  }

  // Deleted here.
  forget (name: string): void {
    this.records.delete(name)
    this.deps.changed()
  }

  // 'DISK@NAME' of every snapshot of every disk.
  snapshotFiles (): string[] {
    const out: string[] = []
    for (const [disk, snaps] of this.snapshots) if (this.records.has(disk)) for (const s of snaps) out.push(formatSnapshotRef({ disk, snapshot: s.name }))
    return out.sort()
  }

  async statSnapshot (ref: string): Promise<SnapshotRecord> {
    const { disk, snapshot } = snapshotFile(ref)
    const known = this.snapshots.get(disk)?.find(s => s.name === snapshot)
    return known ?? await this.deps.meta.getSnapshot(disk, snapshot)
  }
}
