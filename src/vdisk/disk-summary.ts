// What `disk info` and the dashboard show about a disk's placement, computed from the map.
import { readLease } from '../meta/lease'
import { DiskFileOwner, DiskRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { blockCountFor } from './block-range'

export interface DiskSummary {
  name: string
  uuid: string
  sizeBytes: number
  blockSizeBytes: number
  blocks: number
  replicas: number
  epoch: number
  placement: DiskRecord['placement']
  blocksPerSite: Record<string, number>     // blocks with a non-stale replica at that site
  replicasPerNode: Record<string, { inSync: number, syncing: number, stale: number }>
  staleBlocks: number                        // blocks with at least one stale replica
  leaseHolder: string | null
  leaseEpoch: number
  openOn: string[]
  metadataBytes: number
  file: DiskFileOwner | null                 // owner and mode on the mount; null: never set (the agent's user, 0660)
  xattrs: string[]                           // names of the disk file's extended attributes
}

export async function summarizeDisk (meta: MetaStore, name: string): Promise<DiskSummary> {
  const disk = await meta.getDisk(name)
  const nodes = await meta.listNodes()
  const siteOf = new Map(nodes.map(n => [n.id, n.site]))
  const blocksPerSite: Record<string, number> = {}
  const replicasPerNode: DiskSummary['replicasPerNode'] = {}
  let staleBlocks = 0
  for (const seg of await meta.loadPlacement(disk)) {
    for (const run of seg.runs()) {
      const sites = new Set<string>()
      for (const r of run.replicas) {
        const per = replicasPerNode[r.node] ?? (replicasPerNode[r.node] = { inSync: 0, syncing: 0, stale: 0 })
        if (r.state === 'in-sync') per.inSync += run.length
        else if (r.state === 'syncing') per.syncing += run.length
        else per.stale += run.length
        if (r.state !== 'stale') sites.add(siteOf.get(r.node) ?? '?')
      }
      for (const s of sites) blocksPerSite[s] = (blocksPerSite[s] ?? 0) + run.length
      if (run.replicas.some(r => r.state === 'stale')) staleBlocks += run.length
    }
  }
  const lease = await readLease(meta, name)
  return {
    name: disk.name,
    uuid: disk.uuid,
    sizeBytes: disk.sizeBytes,
    blockSizeBytes: disk.blockSizeBytes,
    blocks: blockCountFor(disk.sizeBytes, disk.blockSizeBytes),
    replicas: disk.replicas,
    epoch: disk.epoch,
    placement: disk.placement,
    blocksPerSite,
    replicasPerNode,
    staleBlocks,
    leaseHolder: lease.holder?.host ?? null,
    leaseEpoch: lease.fenceEpoch,
    openOn: await meta.listOpens(name),
    metadataBytes: await meta.segmentSizes(name),
    file: disk.file ?? null,
    xattrs: Object.keys(disk.xattrs ?? {}).sort()
  }
}
