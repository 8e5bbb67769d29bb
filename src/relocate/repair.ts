// What `ukai disk repair` (and the agent's automatic repair after a NO_SPACE stale mark) does to
// a disk: a relocation onto the disk's own node set, which copies every stale replica again from
// an in-sync one (every version). A node that cannot take its stale blocks back — it is dead, or
// it has less free space than those blocks need — is replaced by another live node with room
// (its own site first, then the most free space; never a node already in the set). The flip then
// drops the replaced node only once every block is in sync on the new set, so the last in-sync
// replica of a block is never dropped; its data is deleted after the flip.
import { plural } from '../units'
import { UkaiError } from '../errors'
import { MetaStore, NodeView } from '../meta/store'
import { isPlaceable } from '../meta/node-state'

export interface RepairReplacement {
  node: string        // the node given up
  by: string          // the node that takes its place
  why: 'dead' | 'full'
}

export interface RepairPlan {
  disk: string
  targets: string[]             // the disk's node set after the repair
  replaced: RepairReplacement[]
  staleBlocks: number           // blocks with a stale or syncing replica
  belowReplicaBlocks: number    // blocks with fewer in-sync replicas than the disk's replica count
}

// Null when there is nothing to repair (every replica of every block in sync, as many as the disk
// asks for). Refused (nothing changed) when the blocks live on different node sets, or a node
// must be replaced and no live node has room.
// fullNodes: nodes known to be full although their last usage report (every 5 s) may still show
// room — the agent passes the node that just answered NO_SPACE.
export async function planRepair (meta: MetaStore, name: string, opts: { fullNodes?: string[] } = {}): Promise<RepairPlan | null> {
  const disk = await meta.getDisk(name)
  const nodes = await meta.listNodes()
  let set: string | null = null
  let staleBlocks = 0
  let belowReplicaBlocks = 0
  const stalePerNode = new Map<string, number>()
  for (const seg of await meta.loadPlacement(disk)) {
    for (const run of seg.runs()) {
      const ids = run.replicas.map(r => r.node).sort().join(',')
      if (set !== null && ids !== set) throw UkaiError.badArgument(`disk '${name}' lives on different node sets (${set} and ${ids}): use 'ukai relocate ${name} --nodes …' to choose one`)
      set = ids
      const notInSync = run.replicas.filter(r => r.state !== 'in-sync')
      for (const r of notInSync) stalePerNode.set(r.node, (stalePerNode.get(r.node) ?? 0) + run.length)
      if (notInSync.length > 0) staleBlocks += run.length
      if (run.replicas.length - notInSync.length < disk.replicas) belowReplicaBlocks += run.length
    }
  }
  if (staleBlocks === 0) return null
  const current = (set ?? '').split(',').filter(Boolean)
  const view = (id: string): NodeView | undefined => nodes.find(n => n.id === id)
  const replaced: RepairReplacement[] = []
  const targets = [...current]
  for (const [id, stale] of stalePerNode) {
    const v = view(id)
    const why = v?.alive == null ? 'dead' : opts.fullNodes?.includes(id) === true || v.alive.freeBytes < stale * disk.blockSizeBytes ? 'full' : null
    if (why === null) continue
    const by = replacementFor(nodes, v, targets, disk.blockSizeBytes)
    if (by === null) {
      throw UkaiError.notEnoughNodes(`disk '${name}': node ${id} is ${why === 'dead' ? 'down' : `full (${v?.alive?.freeBytes ?? 0} bytes free, ${plural(stale, 'stale block')})`} and no other live node has room for its replicas; add a node or free space, then run 'ukai disk repair ${name}' again`)
    }
    targets[targets.indexOf(id)] = by
    replaced.push({ node: id, by, why })
  }
  return { disk: name, targets, replaced, staleBlocks, belowReplicaBlocks }
}

// A live node not yet in the set with room for at least a block: the failed node's site first,
// then the most free space.
function replacementFor (nodes: NodeView[], failed: NodeView | undefined, taken: string[], blockSizeBytes: number): string | null {
  const candidates = nodes.filter(n => isPlaceable(n) && !taken.includes(n.id) && (n.alive?.freeBytes ?? 0) >= blockSizeBytes)
  candidates.sort((a, b) => Number(b.site === failed?.site) - Number(a.site === failed?.site) ||
    (b.alive?.freeBytes ?? 0) - (a.alive?.freeBytes ?? 0) || a.id.localeCompare(b.id))
  return candidates[0]?.id ?? null
}
