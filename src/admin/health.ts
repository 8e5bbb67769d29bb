// `ukai health`: is the cluster well, and if not, what is wrong and what to do — in the spirit of
// `ceph health detail`. One pass over ZooKeeper (nodes, their usage reports, every disk's map,
// lease and relocation); no storage node is asked, so it answers in a second even when nodes
// hang. Each finding is a check with a stable code (scripts match the code, people read the
// summary), a level, the affected things one per line, and the command that fixes it.
//
// Levels: ERR = data is unreachable or about to be refused (a block with no in-sync replica on a
// live node, a full node, ZooKeeper unreachable); WARN = redundancy or progress is short of what
// was promised (a node down, stale replicas, blocks below their replica count, a relocation
// paused or with nobody running it, a node near full); OK = none of these.
import { readLease } from '../meta/lease'
import { DiskRecord, RelocationRecord } from '../meta/schema'
import { MetaStore, NodeView } from '../meta/store'
import { PlacementSegment } from '../meta/placement'
import { plural } from '../units'
import { countPlacement, nodeState } from './disk-summary'

export type HealthLevel = 'OK' | 'WARN' | 'ERR'

export type HealthCode =
  | 'ZK_UNREACHABLE'
  | 'NO_NODES'
  | 'NODE_DOWN'
  | 'NODE_FULL'
  | 'NODE_NEARFULL'
  | 'DISK_UNAVAILABLE'
  | 'DISK_DEGRADED'
  | 'DISK_STALE'
  | 'RELOCATION_PAUSED'
  | 'RELOCATION_STALLED'

export interface HealthCheck {
  code: HealthCode
  level: Exclude<HealthLevel, 'OK'>
  summary: string      // one line: what and how many
  detail: string[]     // one line per affected node / disk / relocation
  action: string       // what the operator does about it
}

export interface HealthReport {
  status: HealthLevel
  checks: HealthCheck[]
  nodes: { total: number, up: number, down: number, full: number }
  disks: { total: number, healthy: number }
  checkedAtMs: number
}

// A node whose file system is this full is reported before writes start failing with ENOSPC.
export const NEARFULL_RATIO = 0.85
// A relocation whose record has not moved for this long, while no host runs it, is stalled.
export const RELOCATION_STALLED_MS = 30_000

// What `disk list` shows per disk; the worst that applies.
export type DiskState = 'healthy' | 'relocating' | 'relocation-paused' | 'stale' | 'degraded' | 'unavailable'

export interface DiskHealth {
  name: string
  state: DiskState
  staleBlocks: number
  belowReplicaBlocks: number
  unavailableBlocks: number     // no in-sync replica on a node that is up
  relocation: RelocationRecord['state'] | null
}

// Blocks whose every in-sync replica is on a node that is down: nobody can read them now.
function unavailableBlocks (segments: PlacementSegment[], up: Set<string>): number {
  let n = 0
  for (const seg of segments) {
    for (const run of seg.runs()) {
      if (!run.replicas.some(r => r.state === 'in-sync' && up.has(r.node))) n += run.length
    }
  }
  return n
}

export async function diskHealth (meta: MetaStore, disk: DiskRecord, nodes: NodeView[]): Promise<DiskHealth> {
  const segments = await meta.loadPlacement(disk)
  const counts = countPlacement(segments, disk.replicas, nodes)
  const up = new Set(nodes.filter(n => nodeState(n.alive) !== 'down').map(n => n.id))
  const unavailable = unavailableBlocks(segments, up)
  const reloc = await meta.getRelocation(disk.name)
  const relocation = reloc?.state ?? null
  const state: DiskState = unavailable > 0
    ? 'unavailable'
    : counts.belowReplicaBlocks > 0
      ? 'degraded'
      : counts.staleBlocks > 0
        ? 'stale'
        : relocation === 'paused'
          ? 'relocation-paused'
          : relocation === 'copying' || relocation === 'flipping' ? 'relocating' : 'healthy'
  return { name: disk.name, state, staleBlocks: counts.staleBlocks, belowReplicaBlocks: counts.belowReplicaBlocks, unavailableBlocks: unavailable, relocation }
}

export async function checkHealth (meta: MetaStore, nowMs = Date.now()): Promise<HealthReport> {
  const checks: HealthCheck[] = []
  const nodes = await meta.listNodes()
  const down = nodes.filter(n => nodeState(n.alive) === 'down')
  const full = nodes.filter(n => nodeState(n.alive) === 'full')
  const nearfull = nodes.filter(n => n.alive != null && nodeState(n.alive) === 'up' && n.alive.capacityBytes > 0 && n.alive.usedBytes / n.alive.capacityBytes >= NEARFULL_RATIO)

  if (nodes.length === 0) {
    checks.push({ code: 'NO_NODES', level: 'WARN', summary: 'no storage node is registered', detail: [], action: "start storage nodes ('ukai storagenode --id ID --site SITE …'); no disk can be created before" })
  }
  if (down.length > 0) {
    checks.push({
      code: 'NODE_DOWN',
      level: 'WARN',
      summary: `${plural(down.length, 'storage node')} down`,
      detail: down.map(n => n.lifecycle?.out != null
        ? `node ${n.id} (site ${n.site}, ${n.address}) is out (down longer than down-out-ms): its replicas are being made again on other nodes ('ukai relocate status')`
        : `node ${n.id} (site ${n.site}, ${n.address}) is down`),
      action: "start the node again; writes meanwhile left its replicas stale, repaired with 'ukai disk repair DISK' (see DISK_STALE)"
    })
  }
  if (full.length > 0) {
    checks.push({
      code: 'NODE_FULL',
      level: 'ERR',
      summary: `${plural(full.length, 'storage node')} full`,
      detail: full.map(n => `node ${n.id} (site ${n.site}) has ${n.alive?.freeBytes ?? 0} bytes free: new blocks there fail with NO_SPACE`),
      action: "free or add space on the node's data directory, or move disks off it ('ukai relocate DISK --nodes …')"
    })
  }
  if (nearfull.length > 0) {
    checks.push({
      code: 'NODE_NEARFULL',
      level: 'WARN',
      summary: `${plural(nearfull.length, 'storage node')} near full (≥ ${Math.round(NEARFULL_RATIO * 100)}% used)`,
      detail: nearfull.map(n => `node ${n.id} (site ${n.site}) is ${Math.round(100 * (n.alive?.usedBytes ?? 0) / (n.alive?.capacityBytes ?? 1))}% used`),
      action: "add space, or move disks off it ('ukai relocate DISK --nodes …')"
    })
  }

  const disks = await meta.listDisks()
  const perDisk: DiskHealth[] = []
  for (const d of disks) perDisk.push(await diskHealth(meta, d, nodes))
  const unavailable = perDisk.filter(d => d.unavailableBlocks > 0)
  if (unavailable.length > 0) {
    checks.push({
      code: 'DISK_UNAVAILABLE',
      level: 'ERR',
      summary: `${plural(unavailable.length, 'disk')} with blocks no live node holds in sync`,
      detail: unavailable.map(d => `disk ${d.name}: ${plural(d.unavailableBlocks, 'block')} readable only from nodes that are down`),
      action: 'start the nodes that hold them (NODE_DOWN); reads and writes of those blocks fail until then'
    })
  }
  const degraded = perDisk.filter(d => d.unavailableBlocks === 0 && d.belowReplicaBlocks > 0)
  if (degraded.length > 0) {
    checks.push({
      code: 'DISK_DEGRADED',
      level: 'WARN',
      summary: `${plural(degraded.length, 'disk')} with blocks below their replica count`,
      detail: degraded.map(d => `disk ${d.name}: ${plural(d.belowReplicaBlocks, 'block')} below the replica count`),
      action: "run 'ukai disk repair DISK' once the nodes are up (it copies onto another node with room when one is full)"
    })
  }
  const stale = perDisk.filter(d => d.staleBlocks > 0 && d.belowReplicaBlocks === 0 && d.unavailableBlocks === 0)
  if (stale.length > 0) {
    checks.push({
      code: 'DISK_STALE',
      level: 'WARN',
      summary: `${plural(stale.length, 'disk')} with stale replicas beyond the replica count`,
      detail: stale.map(d => `disk ${d.name}: ${plural(d.staleBlocks, 'block')} with a stale replica`),
      action: "run 'ukai disk repair DISK'"
    })
  }

  const paused: string[] = []
  const stalled: string[] = []
  for (const d of disks) {
    const rec = await meta.getRelocation(d.name)
    if (rec === null) continue
    if (rec.state === 'paused') paused.push(`disk ${d.name}: ${rec.reason || 'paused'}`)
    if (rec.state === 'copying' || rec.state === 'flipping') {
      const holder = (await readLease(meta, d.name)).holder?.host ?? null
      const idleMs = nowMs - rec.progress.updatedAtMs
      if ((rec.executor === '' || holder !== rec.executor) && idleMs >= RELOCATION_STALLED_MS) {
        stalled.push(`disk ${d.name}: ${rec.state}, ${rec.executor === '' ? 'no executor' : `executor ${rec.executor} no longer holds the lease`}, no progress for ${Math.round(idleMs / 1000)} s`)
      }
    }
  }
  if (paused.length > 0) {
    checks.push({ code: 'RELOCATION_PAUSED', level: 'WARN', summary: `${plural(paused.length, 'relocation')} paused`, detail: paused, action: "fix the reason, then run the same 'ukai relocate DISK …' again to resume (or 'ukai relocate cancel DISK')" })
  }
  if (stalled.length > 0) {
    checks.push({ code: 'RELOCATION_STALLED', level: 'WARN', summary: `${plural(stalled.length, 'relocation')} with nobody running it`, detail: stalled, action: "run 'ukai relocate status DISK' to see it, and 'ukai relocate DISK --wait' with the same targets to run it from this host" })
  }

  const status: HealthLevel = checks.some(c => c.level === 'ERR') ? 'ERR' : checks.length > 0 ? 'WARN' : 'OK'
  return {
    status,
    checks,
    nodes: { total: nodes.length, up: nodes.length - down.length - full.length, down: down.length, full: full.length },
    disks: { total: disks.length, healthy: perDisk.filter(d => d.state === 'healthy').length },
    checkedAtMs: nowMs
  }
}

// When ZooKeeper cannot be reached there is nothing else to check.
export function unreachableReport (why: string, nowMs = Date.now()): HealthReport {
  return {
    status: 'ERR',
    checks: [{ code: 'ZK_UNREACHABLE', level: 'ERR', summary: 'ZooKeeper cannot be reached', detail: [why], action: 'check that a quorum of ZooKeeper members runs and that --zk (or $UKAI_ZK) names them' }],
    nodes: { total: 0, up: 0, down: 0, full: 0 },
    disks: { total: 0, healthy: 0 },
    checkedAtMs: nowMs
  }
}

// The text `ukai health` prints (the demo shows the same).
export function formatHealth (r: HealthReport, detail: boolean): string {
  const lines = [`HEALTH_${r.status}` + (r.checks.length > 0 ? `: ${r.checks.map(c => c.summary).join('; ')}` : '')]
  if (r.checks.every(c => c.code !== 'ZK_UNREACHABLE')) {
    lines.push(`  nodes: ${r.nodes.total} (${r.nodes.up} up, ${r.nodes.down} down, ${r.nodes.full} full); disks: ${r.disks.total} (${r.disks.healthy} healthy)`)
  }
  for (const c of r.checks) {
    lines.push(`[${c.level}] ${c.code}: ${c.summary}`)
    if (detail) for (const d of c.detail) lines.push(`    ${d}`)
    lines.push(`    → ${c.action}`)
  }
  return lines.join('\n') + '\n'
}
