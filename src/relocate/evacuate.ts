// Moving a disk's replicas off leaving nodes (out, draining, removed: meta/node-state.ts), for
// the controller's node-lifecycle duty and `ukai node drain`. It is a relocation like any other
// (plan.ts + start.ts): targets added as syncing, blocks copied node to node from an in-sync
// replica — the surviving one when the leaving node is dead (executor.ts: a source that cannot
// answer is skipped unless it holds a block's only in-sync copy) — marked in sync, then one flip
// drops the leaving node; the last in-sync replica of a block is never dropped. The lease holder's
// runner runs it for a leased disk; the controller (or a waiting CLI) runs it for an unleased one.
import { UkaiError } from '../errors'
import { isLeaving, isPlaceable } from '../meta/node-state'
import { Evacuation, evacuationTargets } from '../meta/placement-policy'
import { MetaStore, NodeView } from '../meta/store'
import { planRelocation } from './plan'
import { isActive, startRelocation } from './start'

export interface EvacuationPlan extends Evacuation { disk: string, current: string[] }

// The nodes every replica of the disk lives on, and where they go; null when none is leaving.
export async function planEvacuation (meta: MetaStore, name: string, leaving: Set<string>, nodes: NodeView[]): Promise<EvacuationPlan | null> {
  const disk = await meta.getDisk(name)
  const current = new Set<string>()
  for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) current.add(r.node)
  if (![...current].some(id => leaving.has(id))) return null
  const ev = evacuationTargets(nodes, disk, [...current].sort(), leaving)
  return { disk: name, current: [...current].sort(), ...ev }
}

// The leaving nodes of the cluster: out, draining or removed.
export async function leavingNodes (meta: MetaStore): Promise<Set<string>> {
  return new Set((await meta.listNodeLifecycles()).filter(isLeaving).map(l => l.id))
}

// Records the disk's evacuation as a relocation. Null when nothing of it is on a leaving node;
// BUSY when another relocation of the disk is active (it goes first; ask again after it).
export async function startEvacuation (meta: MetaStore, name: string, leaving: Set<string>, nodes: NodeView[], opts: { rateBytesPerSec?: number } = {}): Promise<EvacuationPlan | null> {
  const existing = await meta.getRelocation(name)
  if (existing !== null && isActive(existing)) throw UkaiError.busy(`disk '${name}' has a relocation running (to ${existing.targetNodes.join(',')}); its evacuation waits for it`)
  const disk = await meta.getDisk(name)
  // A paused move off the leaving nodes (a target filled up, or went away, mid-copy) already added
  // its targets as syncing; a fresh plan would count them as holders and find nowhere to go. It
  // resumes instead — same targets, copying only what is missing — once every target is up, not
  // leaving and has room for a block again (a node full mid-copy: once space frees).
  let ev: EvacuationPlan | null
  if (existing !== null && existing.state === 'paused' && existing.targetNodes.every(id => !leaving.has(id))) {
    const current = new Set<string>()
    for (const seg of await meta.loadPlacement(disk)) for (const run of seg.runs()) for (const r of run.replicas) current.add(r.node)
    const off = [...current].filter(id => leaving.has(id)).sort()
    if (off.length === 0) return null
    const waiting = existing.targetNodes.filter(id => { const n = nodes.find(x => x.id === id); return n?.alive == null || !isPlaceable(n) || (n.alive.freeBytes ?? 0) < disk.blockSizeBytes })
    if (waiting.length > 0) throw UkaiError.notEnoughNodes(`disk '${name}': its paused move off ${off.join(',')} waits for room on ${waiting.join(',')} (${existing.reason})`)
    ev = { disk: name, current: [...current].sort(), targets: existing.targetNodes, replaced: [] }
  } else {
    ev = await planEvacuation(meta, name, leaving, nodes)
    if (ev === null) return null
  }
  const plan = await planRelocation(meta, { disk: name, nodes: ev.targets, replicas: ev.targets.length, probeBudgetMs: 0 })
  // A disk pinned to named nodes follows its replicas; a site-pinned or free disk keeps its policy.
  const placement = disk.placement.nodes !== undefined && disk.placement.nodes.length > 0 ? { nodes: ev.targets } : undefined
  await startRelocation(meta, plan, opts.rateBytesPerSec ?? 0, placement !== undefined ? { placement } : {})
  return ev
}
