// Placement policy, in one place: where new replicas go (a new disk, a grown disk with nothing
// placed yet, the targets of a relocation) and which replica a read tries first. Pure functions
// over node records and distances, so every room that places or reads (admin, relocate, vdisk)
// uses the same rules; the map itself is owned by disk-map.ts.
import { plural } from '../units'
import { UkaiError } from '../errors'
import { Replica } from './placement'
import { PlacementPolicy } from './schema'
import type { NodeView } from './store'
import { isPlaceable, nodeStateOf } from './node-state'

// Round trips assumed for nodes not measured yet, and penalties for unknown and dead nodes.
const UNMEASURED_SAME_SITE_MS = 1
const UNMEASURED_OTHER_SITE_MS = 1000
const DISTANCE_DEAD = 1e6
const DISTANCE_UNKNOWN = 1e7

// --- where new replicas go ----------------------------------------------------------------------

// The named nodes, deduplicated; each must be registered and alive.
export function liveNodesNamed (nodes: NodeView[], ids: string[]): string[] {
  const named = [...new Set(ids)]
  for (const id of named) {
    const n = nodes.find(x => x.id === id)
    if (n === undefined) throw UkaiError.notFound(`unknown storage node '${id}'`)
    if (n.alive === null) throw UkaiError.notEnoughNodes(`storage node '${id}' is not alive`)
  }
  return named
}

// Picks the nodes for a new disk: explicit nodes as given (all must be known and alive), else
// the live nodes of the site (or of the cluster) with the most free space, one per host.
export function choosePlacement (nodes: NodeView[], replicas: number, policy: PlacementPolicy): string[] {
  if (policy.nodes !== undefined && policy.nodes.length > 0) {
    const chosen = liveNodesNamed(nodes, policy.nodes)
    if (chosen.length !== replicas) throw UkaiError.badArgument(`--nodes names ${plural(chosen.length, 'node')} but the disk has ${plural(replicas, 'replica')}`)
    return chosen
  }
  const live = nodes.filter(n => isPlaceable(n) && (policy.site === undefined || n.site === policy.site))
  if (policy.site !== undefined && !nodes.some(n => n.site === policy.site)) throw UkaiError.notFound(`unknown site '${policy.site}'`)
  const where = policy.site === undefined ? 'the cluster' : `site ${policy.site}`
  live.sort((a, b) => (b.alive?.freeBytes ?? 0) - (a.alive?.freeBytes ?? 0) || a.id.localeCompare(b.id))
  if (live.length < replicas) throw UkaiError.notEnoughNodes(`${where} has ${plural(live.length, 'live storage node')}; the disk needs ${plural(replicas, 'replica')}`)
  return live.slice(0, replicas).map(n => n.id)
}

// The target replica set of a relocation: explicit nodes as given, else the live nodes of the
// site — nodes that already hold the disk (`current`) first (less to copy), then the most free
// space.
export function pickRelocationTargets (nodes: NodeView[], current: Set<string>, req: { site?: string, nodes?: string[] }, replicas: number): string[] {
  if (req.nodes !== undefined && req.nodes.length > 0) return liveNodesNamed(nodes, req.nodes)
  const site = req.site as string
  if (!nodes.some(n => n.site === site)) throw UkaiError.notFound(`unknown site '${site}'`)
  const live = nodes.filter(n => n.site === site && isPlaceable(n))
  if (live.length < replicas) throw UkaiError.notEnoughNodes(`site ${site} has ${plural(live.length, 'live storage node')}; the disk needs ${plural(replicas, 'replica')}`)
  live.sort((a, b) => Number(current.has(b.id)) - Number(current.has(a.id)) || (b.alive?.freeBytes ?? 0) - (a.alive?.freeBytes ?? 0) || a.id.localeCompare(b.id))
  return live.slice(0, replicas).map(n => n.id)
}

// Where the replicas of a disk go when some of its nodes leave (out, draining, removed): each
// leaving node is replaced by a placeable node that holds none of the disk and has room for a
// block — its own site first, then the most free space; a disk pinned to a site (placement.site)
// only ever gets nodes of that site. The replica set keeps its size, never names a node twice,
// and the nodes that stay keep their place. NOT_ENOUGH_NODES, naming what is missing, when a
// leaving node has no replacement.
export interface Evacuation { targets: string[], replaced: Array<{ node: string, by: string }> }

export function evacuationTargets (nodes: NodeView[], disk: { name: string, placement: PlacementPolicy, blockSizeBytes: number }, current: string[], leaving: Set<string>): Evacuation {
  const taken = new Set(current)
  const targets = current.filter(id => !leaving.has(id))
  const replaced: Evacuation['replaced'] = []
  for (const id of current.filter(id => leaving.has(id))) {
    const site = disk.placement.site ?? nodes.find(n => n.id === id)?.site
    const fits = (n: NodeView): boolean => isPlaceable(n) && !taken.has(n.id) && (n.alive?.freeBytes ?? 0) >= disk.blockSizeBytes
    const candidates = nodes.filter(n => fits(n) && (disk.placement.site === undefined || n.site === disk.placement.site))
    candidates.sort((a, b) => Number(b.site === site) - Number(a.site === site) || (b.alive?.freeBytes ?? 0) - (a.alive?.freeBytes ?? 0) || a.id.localeCompare(b.id))
    const by = candidates[0]?.id
    if (by === undefined) throw UkaiError.notEnoughNodes(`disk '${disk.name}' cannot leave node ${id}: ${whyNoReplacement(nodes, disk, site, taken)}`)
    taken.add(by)
    targets.push(by)
    replaced.push({ node: id, by })
  }
  return { targets, replaced }
}

// "no other node of site s1 can take its replicas (a2 holds the disk; a3 is draining; a4 has
// 12 KiB free, a block is 64 KiB)": what an operator must add or free.
function whyNoReplacement (nodes: NodeView[], disk: { placement: PlacementPolicy, blockSizeBytes: number }, site: string | undefined, taken: Set<string>): string {
  const pinned = disk.placement.site !== undefined
  const pool = pinned ? nodes.filter(n => n.site === disk.placement.site) : nodes
  const reasons = pool.map((n) => {
    const state = nodeStateOf(n).state
    if (taken.has(n.id)) return `${n.id} holds the disk`
    if (state !== 'up') return `${n.id} is ${state}`
    return `${n.id} has ${n.alive?.freeBytes ?? 0} bytes free (a block is ${disk.blockSizeBytes})`
  })
  const where = pinned ? `site ${disk.placement.site ?? ''} (the disk's placement)` : 'the cluster'
  return `no other node of ${where} is up, not leaving and has room${reasons.length > 0 ? ` (${reasons.join('; ')})` : ''}; add a node${pinned ? ` to site ${site ?? ''}` : ''} or free space`
}

// --- which replica to read (and copy from) ------------------------------------------------------

// Where distances are measured from, and what is known there: round trips, hung nodes.
export interface Vantage {
  host: string
  site: string
  rttMs: (id: string) => number | undefined
  isHung: (id: string) => boolean
}

// Lower is nearer: 0 on this host, else 1 + the measured round trip in ms, else a guess by
// site. Dead nodes sort last but stay candidates: liveness in ZK lags a restart.
export function nodeDistance (n: NodeView | undefined, from: Vantage): number {
  if (n === undefined) return DISTANCE_UNKNOWN
  let d = n.host === from.host ? 0 : 1 + (from.rttMs(n.id) ?? (n.site === from.site ? UNMEASURED_SAME_SITE_MS : UNMEASURED_OTHER_SITE_MS))
  if (n.alive === null || from.isHung(n.id)) d += DISTANCE_DEAD
  return d
}

// Nearest first; replicas about as near as the nearest (within a millisecond or a quarter)
// take turns (`turn` counts reads), so reads spread over equally close nodes.
export function nearestFirst (pool: { distance: (id: string) => number }, replicas: Replica[], turn: number): Replica[] {
  const sorted = replicas.map(r => ({ r, d: pool.distance(r.node) })).sort((a, b) => a.d - b.d)
  if (sorted.length < 2) return sorted.map(x => x.r)
  const near = sorted.filter(x => x.d <= sorted[0].d + Math.max(1, sorted[0].d * 0.25)).length
  const t = turn % near
  return [...sorted.slice(t, near), ...sorted.slice(0, t), ...sorted.slice(near)].map(x => x.r)
}

// Copy sources in order of distance, nearest first (stable among equals).
export function nearestSources (pool: { distance: (id: string) => number }, replicas: Replica[]): Replica[] {
  return replicas.slice().sort((a, b) => pool.distance(a.node) - pool.distance(b.node))
}
