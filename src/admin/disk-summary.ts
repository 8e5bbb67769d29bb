// What `disk info` and the dashboard show about a disk's placement, computed from the map.
import { readLease } from '../meta/lease'
import { PlacementSegment } from '../meta/placement'
import { DiskFileOwner, DiskQos, DiskRecord, NodeAlive, ScrubRecord } from '../meta/schema'
import { MetaStore, NodeView } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import { BLOCK_SIZE_MIN_BYTES } from '../lib/limits'
import { blockCountFor } from '../vdisk/block-range'
import { usedBytesOnce } from './used-bytes'

export interface DiskSummary {
  name: string
  uuid: string
  tenant: string
  sizeBytes: number
  // Written blocks × block size on one in-sync replica (admin/used-bytes.ts); null when no
  // in-sync replica's node answered.
  usedBytes: number | null
  blockSizeBytes: number
  blocks: number
  replicas: number
  epoch: number
  placement: DiskRecord['placement']
  blocksPerSite: Record<string, number>     // blocks with a non-stale replica at that site
  replicasPerNode: Record<string, ReplicaCounts>
  staleBlocks: number                        // blocks with at least one stale replica
  // Blocks with fewer in-sync replicas than the disk's replica count: the redundancy the disk
  // promised and does not have (a node was down or full when a write came). `ukai disk repair`
  // restores it.
  belowReplicaBlocks: number
  leaseHolder: string | null
  leaseEpoch: number
  openOn: string[]
  metadataBytes: number
  parent: DiskRecord['parent']
  snapshots: number
  // Allocated bytes of versions older than the head epoch on the in-sync replicas: what the
  // snapshots hold beyond the head (null when a node could not be asked).
  snapshotBytes: number | null
  file: DiskFileOwner | null                 // owner and mode on the mount; null: never set (the agent's user, 0660)
  xattrs: string[]                           // names of the disk file's extended attributes
  qos: DiskQos | null                        // I/O limits (`ukai disk qos`); null: unlimited
  scrub: ScrubRecord | null                  // what `ukai scrub` found (null: never scrubbed)
}

// A node that cannot take even the smallest block (as of its last usage report, every 5 s).
export function nodeState (alive: NodeAlive | null | undefined): 'up' | 'full' | 'down' {
  if (alive == null) return 'down'
  return alive.freeBytes < BLOCK_SIZE_MIN_BYTES ? 'full' : 'up'
}

// Per node holding replicas of the disk: how many blocks it holds in each state, its site, and
// whether the node itself is up, full or down. (No free-space figure: it changes with every write
// anywhere on the node's file system, and `disk info --json` should change only with the disk.)
export interface ReplicaCounts {
  inSync: number
  syncing: number
  stale: number
  site: string
  state: 'up' | 'full' | 'down'
}

export interface PlacementCounts {
  blocks: number
  blocksPerSite: Record<string, number>
  replicasPerNode: Record<string, ReplicaCounts>
  staleBlocks: number
  belowReplicaBlocks: number
}

// One pass over the map: what `disk info`, `ukai top` and the agent's log report.
export function countPlacement (segments: PlacementSegment[], replicas: number, nodes: NodeView[]): PlacementCounts {
  const byId = new Map(nodes.map(n => [n.id, n]))
  const out: PlacementCounts = { blocks: 0, blocksPerSite: {}, replicasPerNode: {}, staleBlocks: 0, belowReplicaBlocks: 0 }
  for (const seg of segments) {
    for (const run of seg.runs()) {
      out.blocks += run.length
      const sites = new Set<string>()
      let inSync = 0
      for (const r of run.replicas) {
        const n = byId.get(r.node)
        const per = out.replicasPerNode[r.node] ?? (out.replicasPerNode[r.node] = { inSync: 0, syncing: 0, stale: 0, site: n?.site ?? '?', state: nodeState(n?.alive) })
        if (r.state === 'in-sync') { per.inSync += run.length; inSync++ } else if (r.state === 'syncing') per.syncing += run.length
        else per.stale += run.length
        if (r.state !== 'stale') sites.add(n?.site ?? '?')
      }
      for (const s of sites) out.blocksPerSite[s] = (out.blocksPerSite[s] ?? 0) + run.length
      if (run.replicas.some(r => r.state === 'stale')) out.staleBlocks += run.length
      if (inSync < replicas) out.belowReplicaBlocks += run.length
    }
  }
  return out
}

export async function summarizeDisk (meta: MetaStore, name: string): Promise<DiskSummary> {
  const disk = await meta.getDisk(name)
  const nodes = await meta.listNodes()
  const { blocksPerSite, replicasPerNode, staleBlocks, belowReplicaBlocks } = countPlacement(await meta.loadPlacement(disk), disk.replicas, nodes)
  const lease = await readLease(meta, name)
  const snaps = await meta.listSnapshots(name)
  return {
    name: disk.name,
    uuid: disk.uuid,
    tenant: disk.tenant,
    sizeBytes: disk.sizeBytes,
    usedBytes: await usedBytesOnce(meta, disk, nodes),
    blockSizeBytes: disk.blockSizeBytes,
    blocks: blockCountFor(disk.sizeBytes, disk.blockSizeBytes),
    replicas: disk.replicas,
    epoch: disk.epoch,
    placement: disk.placement,
    blocksPerSite,
    replicasPerNode,
    staleBlocks,
    belowReplicaBlocks,
    leaseHolder: lease.holder?.host ?? null,
    leaseEpoch: lease.fenceEpoch,
    openOn: await meta.listOpens(name),
    metadataBytes: await meta.segmentSizes(name),
    parent: disk.parent,
    snapshots: snaps.length,
    snapshotBytes: snaps.length === 0 ? 0 : await snapshotBytes(meta, disk, nodes),
    file: disk.file ?? null,
    xattrs: Object.keys(disk.xattrs ?? {}).sort(),
    qos: disk.qos ?? null,
    scrub: await meta.getScrubRecord(name)
  }
}

// Per node holding in-sync replicas: block info of every block with a version below the head.
// Costs one call per such block: fine for `disk info`, not for a dashboard refresh.
async function snapshotBytes (meta: MetaStore, disk: DiskRecord, nodes: NodeView[]): Promise<number | null> {
  const holders = new Set<string>()
  for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) if (r.state === 'in-sync') holders.add(r.node)
  let total = 0
  for (const id of holders) {
    const view = nodes.find(n => n.id === id)
    if (view?.alive == null) return null
    const client = new StorageClient({ nodeId: id, address: view.alive.address })
    try {
      for (const b of await client.listBlocks({ diskUuid: disk.uuid })) {
        if (!b.epochs.some(e => e < disk.epoch)) continue
        for (const v of await client.blockInfo({ diskUuid: disk.uuid, block: b.block })) if (v.epoch < disk.epoch) total += v.allocatedBytes
      }
    } catch {
      return null
    } finally {
      await client.close()
    }
  }
  return total
}
