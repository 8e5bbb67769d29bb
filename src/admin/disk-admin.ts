// Creating, growing and deleting disks: shared by the CLI and the FUSE agent. Every check runs
// before anything is written, and each change is one ZooKeeper transaction, so a refused or
// failed request leaves nothing behind.
import { plural } from '../units'
import { randomUUID } from 'node:crypto'
import { UkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { PlacementSegment, ReplicaSet, segmentLayout } from '../meta/placement'
import {
  DEFAULT_TENANT, DISK_SIZE_MAX_BYTES, DiskFileOwner, DiskRecord, PlacementPolicy, REPLICAS_MAX, validateDiskName, validateId
} from '../meta/schema'
import { MetaStore } from '../meta/store'
import { takeFencingEpoch } from '../meta/lease'
import { choosePlacement } from '../meta/placement-policy'
import { StorageClient } from '../storagenode/client'
import { BLOCK_SIZE_MAX_BYTES, BLOCK_SIZE_MIN_BYTES } from '../lib/limits'
import { blockCountFor } from '../vdisk/block-range'

export interface CreateDiskRequest {
  name: string
  sizeBytes: number
  blockSizeBytes?: number
  replicas?: number
  site?: string
  nodes?: string[]
  tenant?: string
  file?: DiskFileOwner // owner and mode of the disk file on the mount (default: the agent's user, 0660)
  parent?: DiskRecord['parent']   // a clone: reads through to this snapshot until written
}

export function validateSize (sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw UkaiError.badArgument(`bad size ${sizeBytes}: must be a whole number of bytes ≥ 0`)
  if (sizeBytes > DISK_SIZE_MAX_BYTES) throw UkaiError.badArgument(`bad size ${sizeBytes}: the largest disk is ${DISK_SIZE_MAX_BYTES} bytes (1 PiB)`)
  if (sizeBytes % 512 !== 0) throw UkaiError.badArgument(`bad size ${sizeBytes}: must be a multiple of 512 bytes`)
}

export function validateBlockSize (blockSizeBytes: number): void {
  const pow2 = Number.isSafeInteger(blockSizeBytes) && blockSizeBytes > 0 && (blockSizeBytes & (blockSizeBytes - 1)) === 0
  if (!pow2 || blockSizeBytes < BLOCK_SIZE_MIN_BYTES || blockSizeBytes > BLOCK_SIZE_MAX_BYTES) {
    throw UkaiError.badArgument(`bad block size ${blockSizeBytes}: must be a power of two from 64K to 64M`)
  }
}

export function validateReplicas (replicas: number): void {
  if (!Number.isSafeInteger(replicas) || replicas < 1 || replicas > REPLICAS_MAX) {
    throw UkaiError.badArgument(`bad replica count ${replicas}: must be 1 to ${REPLICAS_MAX}`)
  }
}

function freshSet (nodes: string[]): ReplicaSet {
  return nodes.map(node => ({ node, state: 'in-sync' as const }))
}

export async function createDisk (meta: MetaStore, req: CreateDiskRequest): Promise<DiskRecord> {
  validateDiskName(req.name)
  validateSize(req.sizeBytes)
  const config = await meta.config()
  const blockSizeBytes = req.blockSizeBytes ?? config.defaultBlockSizeBytes
  validateBlockSize(blockSizeBytes)
  const replicas = req.replicas ?? (req.nodes?.length || config.defaultReplicas)
  validateReplicas(replicas)
  if (req.site !== undefined) validateId(req.site, 'site')
  if (req.tenant !== undefined) validateId(req.tenant, 'tenant name')
  const policy: PlacementPolicy = req.nodes !== undefined && req.nodes.length > 0 ? { nodes: req.nodes } : req.site !== undefined ? { site: req.site } : {}
  const placed = choosePlacement(await meta.listNodes(), replicas, policy)
  const record: DiskRecord = {
    v: 1,
    name: req.name,
    uuid: randomUUID(),
    sizeBytes: req.sizeBytes,
    blockSizeBytes,
    replicas,
    placement: policy,
    tenant: req.tenant ?? DEFAULT_TENANT,
    parent: req.parent ?? null,
    epoch: 1,  // a clone's copy-on-write lands at epoch 1 too (parent-chain.ts CLONE_BASE_EPOCH)
    segmentBlocks: config.segmentBlocks,
    createdAtMs: Date.now(),
    ...(req.file !== undefined ? { file: req.file } : {})
  }
  const segments = segmentLayout(blockCountFor(req.sizeBytes, blockSizeBytes), config.segmentBlocks)
    .map(s => new PlacementSegment(s.index, s.firstBlock, s.blockCount, freshSet(placed)))
  await meta.createDisk(record, segments)
  return record
}

// Grows a disk. New blocks are placed like the disk's last block (its current nodes).
// Shrinking is refused: it would silently drop written data.
export async function resizeDisk (meta: MetaStore, name: string, sizeBytes: number): Promise<DiskRecord> {
  validateSize(sizeBytes)
  for (let attempt = 0; ; attempt++) {
    const disk = await meta.getDisk(name)
    if (sizeBytes === disk.sizeBytes) return disk
    if (sizeBytes < disk.sizeBytes) throw UkaiError.badArgument(`disk '${name}' is ${disk.sizeBytes} bytes; shrinking to ${sizeBytes} would drop data and is refused`)
    const { version, ...rec } = disk
    const oldBlocks = blockCountFor(disk.sizeBytes, disk.blockSizeBytes)
    const newBlocks = blockCountFor(sizeBytes, disk.blockSizeBytes)
    const segments = await meta.loadPlacement(disk)
    let template: ReplicaSet
    if (oldBlocks > 0) {
      template = segments[segments.length - 1].replicas(oldBlocks - 1).filter(r => r.state !== 'stale').map(r => ({ node: r.node, state: 'in-sync' as const }))
    } else {
      template = freshSet(choosePlacement(await meta.listNodes(), disk.replicas, disk.placement))
    }
    if (template.length === 0) throw UkaiError.io(`disk '${name}': its last block has no live replica to extend from`)
    const changed: PlacementSegment[] = []
    const added: PlacementSegment[] = []
    for (const s of segmentLayout(newBlocks, disk.segmentBlocks)) {
      const old = segments[s.index]
      if (old === undefined) {
        added.push(new PlacementSegment(s.index, s.firstBlock, s.blockCount, template))
      } else if (old.blockCount < s.blockCount) {
        const runs = [...old.runs(), { length: s.blockCount - old.blockCount, replicas: template }]
        const grown = PlacementSegment.fromRuns(s.index, s.firstBlock, runs)
        grown.version = old.version
        changed.push(grown)
      }
    }
    const next: DiskRecord = { ...rec, sizeBytes }
    try {
      await meta.updateDisk(next, version, changed, added, sizeBytes - disk.sizeBytes)
      return next
    } catch (err) {
      if ((err as UkaiError).code !== 'ZK_CONFLICT' || attempt >= 5) throw err
    }
  }
}

// Deletes the metadata in one transaction (refused while the disk is open anywhere), then the
// blocks on the nodes. A node that is down keeps orphaned versions until it is cleaned.
// A disk with snapshots is deleted only with `withSnapshots`; one with clones never (delete or
// flatten the clones first: they read through to its snapshots).
export async function deleteDisk (meta: MetaStore, name: string, opts: { logger?: Logger, withSnapshots?: boolean } = {}): Promise<{ orphanedOn: string[] }> {
  const log = opts.logger ?? silentLogger
  const disk = await meta.getDisk(name)
  const clones = await meta.listClones(name)
  if (clones.length > 0) {
    throw UkaiError.busy(`disk '${name}' has ${clones.length === 1 ? 'a clone' : 'clones'} ${clones.map(c => `${c.name} (of @${c.parent?.snapshot ?? '?'})`).join(', ')}; delete them or flatten them (ukai snapshot delete --flatten-clones) first`)
  }
  const snaps = await meta.listSnapshots(name)
  if (snaps.length > 0 && opts.withSnapshots !== true) {
    throw UkaiError.busy(`disk '${name}' has ${plural(snaps.length, 'snapshot')} (${snaps.map(s => s.name).join(', ')}); delete them first or pass --with-snapshots`)
  }
  const nodes = new Set<string>()
  for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) nodes.add(r.node)
  // A fencing epoch of our own, for the nodes: they let an agent (a `rm` on the mount) delete a
  // disk's data only under a lease epoch they accept (storagenode/authz.ts). Null: the disk is
  // open somewhere, and removeDisk refuses it below.
  const fencing = await takeFencingEpoch(meta, name)
  await meta.removeDisk(name)
  const views = await meta.listNodes()
  const orphanedOn: string[] = []
  await Promise.all([...nodes].map(async (id) => {
    const view = views.find(v => v.id === id)
    if (view?.alive == null) { orphanedOn.push(id); return }
    const client = new StorageClient({ nodeId: id, address: view.alive.address })
    try {
      await client.deleteDisk({ diskUuid: disk.uuid, leaseEpoch: fencing?.leaseEpoch ?? 0 })
    } catch (err) {
      orphanedOn.push(id)
      log.warn({ node: id, disk: name, err: String(err) }, 'could not delete disk data on node')
    } finally {
      await client.close()
    }
  }))
  return { orphanedOn }
}
