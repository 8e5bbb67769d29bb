// The node verbs' logic (`ukai node list | drain | undrain | remove`): each node's state
// (meta/node-state.ts), and the checks that keep a drain or a removal from losing data or
// leaving a disk unable to meet its placement. The moves themselves are relocations recorded by
// relocate/evacuate.ts (the CLI and the controller's node-lifecycle duty call it).
import { UkaiError } from '../errors'
import { plural } from '../units'
import { NodeStateName, isLeaving, nodeStateOf } from '../meta/node-state'
import { evacuationTargets } from '../meta/placement-policy'
import { NodeView, MetaStore } from '../meta/store'

export interface NodeStateView extends NodeView { state: NodeStateName, sinceMs: number | null }

export async function listNodeStates (meta: MetaStore): Promise<NodeStateView[]> {
  return (await meta.listNodes()).map(n => ({ ...n, ...nodeStateOf(n) }))
}

// Per disk that has a replica on the node: how many blocks it holds, and of how many it holds
// the only in-sync replica.
export interface NodeHolding { disk: string, blocks: number, soleInSyncBlocks: number }

export async function holdingsOf (meta: MetaStore, id: string): Promise<NodeHolding[]> {
  const out: NodeHolding[] = []
  for (const disk of await meta.listDisks()) {
    let blocks = 0
    let sole = 0
    for (const seg of await meta.loadPlacement(disk)) {
      for (const run of seg.runs()) {
        if (!run.replicas.some(r => r.node === id)) continue
        blocks += run.length
        const inSync = run.replicas.filter(r => r.state === 'in-sync')
        if (inSync.length === 1 && inSync[0].node === id) sole += run.length
      }
    }
    if (blocks > 0) out.push({ disk: disk.name, blocks, soleInSyncBlocks: sole })
  }
  return out
}

// Whether every disk on the node can move off it without breaking its placement; refused
// (NOT_ENOUGH_NODES, one line per disk that cannot) otherwise. Other leaving nodes count as gone.
export async function checkDrainable (meta: MetaStore, id: string): Promise<NodeHolding[]> {
  const nodes = await meta.listNodes()
  const leaving = new Set([id, ...nodes.filter(n => isLeaving(n.lifecycle)).map(n => n.id)])
  const holdings = await holdingsOf(meta, id)
  const problems: string[] = []
  for (const h of holdings) {
    const disk = await meta.getDisk(h.disk)
    const current = new Set<string>()
    for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) current.add(r.node)
    try {
      evacuationTargets(nodes, disk, [...current].sort(), leaving)
    } catch (err) {
      if ((err as UkaiError).code !== 'NOT_ENOUGH_NODES') throw err
      problems.push((err as Error).message)
    }
  }
  if (problems.length > 0) throw UkaiError.notEnoughNodes(`cannot drain node ${id}, nothing changed: ${problems.join('; ')}`)
  return holdings
}

async function existing (meta: MetaStore, id: string): Promise<NodeView> {
  return await meta.getNode(id) // NOT_FOUND: "unknown storage node 'x'"
}

// Marks the node draining (idempotent). The caller checked checkDrainable first.
export async function markDraining (meta: MetaStore, id: string): Promise<void> {
  await existing(meta, id)
  await meta.updateNodeLifecycle(id, cur => ({ ...cur, drainingSinceMs: cur.drainingSinceMs ?? Date.now() }))
}

// Takes a drain back: the node is a placement target again. Replicas already moved stay moved.
export async function undrain (meta: MetaStore, id: string): Promise<boolean> {
  const n = await existing(meta, id)
  if (n.lifecycle?.drainingSinceMs == null) return false
  await meta.updateNodeLifecycle(id, (cur) => {
    const next = { ...cur, drainingSinceMs: null }
    return next.downSinceMs === null && next.out === null && next.removedAtMs === null ? null : next
  })
  return true
}

// Removes the node's record; refused while it holds the only in-sync replica of any block
// (naming the disks). Replicas it still shares with other nodes are moved by the controller
// (the node's tombstone makes it a leaving node until no map names it).
export async function removeNode (meta: MetaStore, id: string): Promise<NodeHolding[]> {
  await existing(meta, id)
  const holdings = await holdingsOf(meta, id)
  const sole = holdings.filter(h => h.soleInSyncBlocks > 0)
  if (sole.length > 0) {
    throw UkaiError.busy(`node ${id} holds the only in-sync copy of ${sole.map(h => `${plural(h.soleInSyncBlocks, 'block')} of disk '${h.disk}'`).join(', ')}; nothing removed: drain it first ('ukai node drain ${id} --wait')`)
  }
  await meta.removeNode(id)
  return holdings
}
