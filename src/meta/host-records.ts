// Who is in the cluster: storage nodes (their records, liveness and lifecycle: down, out,
// draining, removed; src/meta/node-state.ts says what the records mean) and agents. Part of
// MetaStore (store.ts builds on this class, which builds on the session in meta-session.ts):
// separate because these records belong to hosts, not to any disk.
import { UkaiError, isUkaiError } from '../errors'
import { AgentAlive, AgentRecord, NodeAlive, NodeLifecycle, NodeRecord, decodeJson, encodeJson, paths } from './schema'
import { Watcher } from './zk-client'
import { BACKGROUND_REPORT_TIMEOUT_MS, MetaSession } from './meta-session'

export interface NodeView extends NodeRecord { alive: NodeAlive | null, lifecycle: NodeLifecycle | null }
// Attempts of a read-modify-write of a node's lifecycle that lost a race before giving up.
const LIFECYCLE_UPDATE_ATTEMPTS_MAX = 5
export interface AgentView extends AgentRecord { alive: AgentAlive | null }

function blankLifecycle (id: string): NodeLifecycle {
  return { v: 1, id, downSinceMs: null, out: null, drainingSinceMs: null, removedAtMs: null }
}

export class HostRecords extends MetaSession {
  // --- storage nodes ------------------------------------------------------------------------

  async registerNode (rec: NodeRecord, alive: () => NodeAlive): Promise<void> {
    const existing = await this.zk.getOrNull(paths.node(rec.id))
    if (existing === null) {
      await this.zk.create(paths.node(rec.id), encodeJson(rec))
    } else {
      const old = decodeJson<NodeRecord>(existing.data, `node ${rec.id}`)
      if (old.site !== rec.site) throw UkaiError.badArgument(`storage node ${rec.id} is registered at site ${old.site}, not ${rec.site}; a node keeps its site`)
      await this.zk.set(paths.node(rec.id), encodeJson(rec))
    }
    // A node removed with `ukai node remove` that starts again is a node again: its tombstone goes.
    const lifecycle = await this.getNodeLifecycle(rec.id)
    if (lifecycle?.removedAtMs != null) await this.zk.remove(paths.nodeState(rec.id)).catch((err) => { if (!isUkaiError(err, 'NOT_FOUND')) throw err })
    await this.holdEphemeral(paths.nodeAlive(rec.id), () => encodeJson(alive()))
  }

  // A background report: skipped while ZooKeeper is away (see quietly()).
  async updateNodeAlive (id: string, alive: NodeAlive): Promise<void> {
    await this.quietly('node usage', async () => { await this.zk.set(paths.nodeAlive(id), encodeJson(alive), -1, { timeoutMs: BACKGROUND_REPORT_TIMEOUT_MS }) })
  }

  async listNodes (watch?: Watcher): Promise<NodeView[]> {
    const ids = await this.zk.children(paths.nodes, watch)
    const alive = new Set(await this.zk.children(paths.nodesAlive, watch))
    const lifecycles = new Map((await this.listNodeLifecycles()).map(l => [l.id, l]))
    const out: NodeView[] = []
    for (const id of ids) {
      const rec = await this.zk.getOrNull(paths.node(id))
      if (rec === null) continue
      const a = alive.has(id) ? await this.zk.getOrNull(paths.nodeAlive(id), watch) : null
      out.push({ ...decodeJson<NodeRecord>(rec.data, `node ${id}`), alive: a === null ? null : decodeJson<NodeAlive>(a.data, `node ${id} liveness`), lifecycle: lifecycles.get(id) ?? null })
    }
    return out
  }

  // --- node lifecycle (src/meta/node-state.ts says what the records mean) -------------------

  // Every node's lifecycle record, removed nodes' tombstones included ([] on a cluster that has none).
  async listNodeLifecycles (): Promise<NodeLifecycle[]> {
    let ids: string[]
    try {
      ids = await this.zk.children(paths.nodeStates)
    } catch (err) {
      if (isUkaiError(err, 'NOT_FOUND')) return []
      throw err
    }
    const out: NodeLifecycle[] = []
    for (const id of ids) {
      const got = await this.zk.getOrNull(paths.nodeState(id))
      if (got === null) continue
      // One corrupt record must not stop every reader (the controller's duty, node list): it
      // counts as absent (the node is up or down by its ephemeral alone) and is logged.
      try {
        out.push(decodeJson<NodeLifecycle>(got.data, `lifecycle of node ${id}`))
      } catch (err) {
        if (!isUkaiError(err, 'INTERNAL')) throw err
        this.log.error({ node: id, err: err.message }, 'ignoring a corrupt node lifecycle record')
      }
    }
    return out
  }

  async getNodeLifecycle (id: string): Promise<NodeLifecycle | null> {
    const got = await this.zk.getOrNull(paths.nodeState(id))
    return got === null ? null : this.decodeLifecycleOrBlank(id, got.data)
  }

  // Read-modify-write of a node's lifecycle record, conditional on the version read (retried
  // when it lost a race). `change` gets the record (a blank one when there is none) and returns
  // the new one, or null to remove it. Returns what was written.
  async updateNodeLifecycle (id: string, change: (cur: NodeLifecycle) => NodeLifecycle | null): Promise<NodeLifecycle | null> {
    for (let attempt = 1; ; attempt++) {
      const got = await this.zk.getOrNull(paths.nodeState(id))
      const cur = got === null ? blankLifecycle(id) : this.decodeLifecycleOrBlank(id, got.data)
      const next = change(cur)
      try {
        if (next === null) {
          if (got !== null) await this.zk.remove(paths.nodeState(id), got.stat.version)
        } else if (got === null) {
          await this.zk.create(paths.nodeState(id), encodeJson(next))
        } else {
          await this.zk.set(paths.nodeState(id), encodeJson(next), got.stat.version)
        }
        return next
      } catch (err) {
        const lostRace = isUkaiError(err, 'ZK_CONFLICT') || isUkaiError(err, 'ALREADY_EXISTS') || isUkaiError(err, 'NOT_FOUND')
        if (!lostRace || attempt >= LIFECYCLE_UPDATE_ATTEMPTS_MAX) throw err
      }
    }
  }

  // A corrupt record is replaced by what the writer decides from a blank one (logged).
  private decodeLifecycleOrBlank (id: string, data: Buffer): NodeLifecycle {
    try {
      return decodeJson<NodeLifecycle>(data, `lifecycle of node ${id}`)
    } catch (err) {
      if (!isUkaiError(err, 'INTERNAL')) throw err
      this.log.error({ node: id, err: err.message }, 'replacing a corrupt node lifecycle record')
      return blankLifecycle(id)
    }
  }

  // `ukai node remove`: the node's record goes; its lifecycle becomes a tombstone (removedAtMs)
  // in the same transaction, so the controller still moves replicas the maps give it.
  async removeNode (id: string): Promise<void> {
    const rec = await this.zk.getOrNull(paths.node(id))
    if (rec === null) throw UkaiError.notFound(`unknown storage node '${id}'`)
    const got = await this.zk.getOrNull(paths.nodeState(id))
    const cur = got === null ? blankLifecycle(id) : this.decodeLifecycleOrBlank(id, got.data)
    const tomb = encodeJson({ ...cur, removedAtMs: Date.now() })
    await this.zk.multi([
      { op: 'remove', path: paths.node(id), version: rec.stat.version },
      got === null ? { op: 'create', path: paths.nodeState(id), data: tomb } : { op: 'set', path: paths.nodeState(id), data: tomb, version: got.stat.version }
    ])
  }

  async getNode (id: string): Promise<NodeView> {
    const node = (await this.listNodes()).find(n => n.id === id)
    if (node === undefined) throw UkaiError.notFound(`unknown storage node '${id}'`)
    return node
  }

  // --- agents -------------------------------------------------------------------------------

  async registerAgent (rec: AgentRecord, alive: AgentAlive): Promise<void> {
    if (await this.zk.exists(paths.agent(rec.host)) === null) await this.zk.create(paths.agent(rec.host), encodeJson(rec))
    else await this.zk.set(paths.agent(rec.host), encodeJson(rec))
    await this.holdEphemeral(paths.agentAlive(rec.host), () => encodeJson(alive))
  }

  async listAgents (): Promise<AgentView[]> {
    const hosts = await this.zk.children(paths.agents)
    const alive = new Set(await this.zk.children(paths.agentsAlive))
    const out: AgentView[] = []
    for (const host of hosts) {
      const rec = await this.zk.getOrNull(paths.agent(host))
      if (rec === null) continue
      const a = alive.has(host) ? await this.zk.getOrNull(paths.agentAlive(host)) : null
      out.push({ ...decodeJson<AgentRecord>(rec.data, `agent ${host}`), alive: a === null ? null : decodeJson<AgentAlive>(a.data, `agent ${host} liveness`) })
    }
    return out
  }
}
