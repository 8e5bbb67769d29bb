// What state a storage node is in, derived in one place from its liveness ephemeral and its
// lifecycle record (schema.ts NodeLifecycle), for `ukai node list`, the placement policy and
// the controller's node-lifecycle duty:
//   up        its nodes-alive ephemeral is there
//   down      the ephemeral is gone (the session expired: crash, hang, network), not yet out
//   out       down longer than the cluster's down-out-ms: its replicas are made again elsewhere
//   draining  `ukai node drain`: everything moves off it while it still serves
//   removed   `ukai node remove`: its record is gone; a tombstone until no map names it
// Out and draining are the states whose replicas leave; an out node that comes back is up again
// (what it still holds is repaired like any stale replica).
import { ClusterConfig, DOWN_OUT_MS_DEFAULT, NodeLifecycle } from './schema'
import type { NodeView } from './store'

export type NodeStateName = 'up' | 'down' | 'out' | 'draining' | 'removed'
export const NODE_STATES: readonly NodeStateName[] = ['up', 'down', 'out', 'draining', 'removed']

export interface NodeState { state: NodeStateName, sinceMs: number | null }

export function downOutMsOf (config: ClusterConfig): number {
  return config.downOutMs ?? DOWN_OUT_MS_DEFAULT
}

export function nodeStateOf (n: Pick<NodeView, 'alive'> & { lifecycle: NodeLifecycle | null }): NodeState {
  const l = n.lifecycle
  if (l?.removedAtMs != null) return { state: 'removed', sinceMs: l.removedAtMs }
  if (l?.drainingSinceMs != null) return { state: 'draining', sinceMs: l.drainingSinceMs }
  if (n.alive !== null) return { state: 'up', sinceMs: n.alive.startedAtMs }
  if (l?.out != null) return { state: 'out', sinceMs: l.out.sinceMs }
  return { state: 'down', sinceMs: l?.downSinceMs ?? null }
}

// Whether the node's replicas must move off it (out, draining, removed).
export function isLeaving (l: NodeLifecycle | null): boolean {
  return l !== null && (l.out !== null || l.drainingSinceMs !== null || l.removedAtMs !== null)
}

// Whether new replicas may go to the node: up, and not on its way out.
export function isPlaceable (n: Pick<NodeView, 'alive' | 'lifecycle'>): boolean {
  return n.alive !== null && !isLeaving(n.lifecycle)
}
