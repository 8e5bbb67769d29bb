// What a relocation will do, computed before anything changes: the target replica set, the
// replicas to drop, and how many written blocks and bytes must be copied. Bad requests (unknown
// site or node, too few live nodes, a disk already there) are refused here, with nothing changed.
import { plural } from '../units'
import { UkaiError } from '../errors'
import { validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import { validateReplicas } from '../admin/disk-admin'
import { pickRelocationTargets } from '../meta/placement-policy'
import { blockCountFor } from '../vdisk/block-range'
import { CopyEstimate, estimateCopy, ProbeBlock, ProbeNode } from './copy-estimate'

export interface RelocationRequest {
  disk: string
  site?: string
  nodes?: string[]
  replicas?: number
  rateCapBytesPerSec?: number  // for the estimate
  probeBudgetMs?: number       // 0: do not measure the link
}

export interface RelocationPlan {
  disk: string
  uuid: string
  targetNodes: string[]
  dropNodes: string[]
  addedNodes: string[]
  blocks: number
  writtenBlocks: number   // blocks with data on a source: what gets copied
  bytes: number           // upper bound: written blocks × block size × targets to fill
  fromSites: string[]
  toSites: string[]
  estimate: CopyEstimate
}

export async function planRelocation (meta: MetaStore, req: RelocationRequest): Promise<RelocationPlan> {
  if ((req.site === undefined) === (req.nodes === undefined || req.nodes.length === 0)) {
    throw UkaiError.badArgument('say where to: --to SITE or --nodes a,b (one of them)')
  }
  if (req.site !== undefined) validateId(req.site, 'site')
  const disk = await meta.getDisk(req.disk)
  const replicas = req.replicas ?? (req.nodes?.length || disk.replicas)
  validateReplicas(replicas)
  if (req.nodes !== undefined && req.nodes.length > 0 && new Set(req.nodes).size !== replicas) {
    throw UkaiError.badArgument(`--nodes names ${plural(new Set(req.nodes).size, 'node')} but --replicas is ${replicas}`)
  }
  const nodes = await meta.listNodes()
  const segments = await meta.loadPlacement(disk)
  const current = new Set<string>()
  let alreadyThere = true
  for (const seg of segments) for (const run of seg.runs()) for (const r of run.replicas) current.add(r.node)
  const targetNodes = pickRelocationTargets(nodes, current, req, replicas)
  for (const seg of segments) {
    for (const run of seg.runs()) {
      const inSync = run.replicas.filter(r => r.state === 'in-sync').map(r => r.node).sort()
      if (inSync.length !== run.replicas.length || inSync.join() !== [...targetNodes].sort().join()) alreadyThere = false
    }
  }
  if (alreadyThere) {
    throw new UkaiError('ALREADY_EXISTS', `disk '${req.disk}' is already on ${[...targetNodes].sort().join(', ')}${req.site !== undefined ? ` (site ${req.site})` : ''}; nothing to do`)
  }
  const inSyncEverywhere = new Set(targetNodes.filter(t => segments.every(seg => seg.runs().every(run => run.replicas.some(r => r.node === t && r.state === 'in-sync')))))
  const dropNodes = [...current].filter(n => !targetNodes.includes(n)).sort()
  const addedNodes = targetNodes.filter(n => !current.has(n))

  // Written blocks, as the source nodes know them: only those are copied.
  const written = new Map<number, ProbeNode[]>() // block → nodes holding it (targets too: see executor)
  for (const id of current) {
    const view = nodes.find(n => n.id === id)
    if (view?.alive == null) continue
    const client = new StorageClient({ nodeId: id, address: view.alive.address })
    try {
      for (const b of await client.listBlocks({ diskUuid: disk.uuid })) {
        written.set(b.block, [...(written.get(b.block) ?? []), { id, address: view.alive.address }])
      }
    } finally {
      await client.close()
    }
  }
  const siteOf = (id: string): string => nodes.find(n => n.id === id)?.site ?? '?'
  const toFill = targetNodes.filter(t => !inSyncEverywhere.has(t))
  // Each written block is copied once per target that is not yet in sync everywhere.
  const bytes = written.size * disk.blockSizeBytes * Math.max(1, toFill.length)
  const probeTargets = toFill.flatMap(id => {
    const address = nodes.find(n => n.id === id)?.alive?.address
    return address === undefined ? [] : [{ id, address }]
  })
  const blocks: ProbeBlock[] = [...written.entries()].sort((a, b) => a[0] - b[0]).map(([block, sources]) => ({ block, sources }))
  const estimate = await estimateCopy({
    diskUuid: disk.uuid,
    blocks,
    targets: probeTargets,
    bytesToCopy: bytes,
    rateCapBytesPerSec: req.rateCapBytesPerSec ?? 0,
    budgetMs: req.probeBudgetMs
  })
  return {
    disk: disk.name,
    uuid: disk.uuid,
    targetNodes,
    dropNodes,
    addedNodes,
    blocks: blockCountFor(disk.sizeBytes, disk.blockSizeBytes),
    writtenBlocks: written.size,
    bytes,
    fromSites: [...new Set([...current].map(siteOf))].sort(),
    toSites: [...new Set(targetNodes.map(siteOf))].sort(),
    estimate
  }
}
