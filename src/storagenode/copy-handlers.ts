// The node-to-node copy handlers: PullBlock (relocation and repair: this node pulls a block's
// versions from a source node, block-pull.ts) and CopyBase (a clone's first write: its block
// copied from the base, locally by the store or from a peer, base-copy.ts). Copy traffic goes
// node to node, never through the hypervisor. Peers are reached at the address this node was
// told for them (a WAN-emulating proxy, `--peer-address`) or else at the one the caller names.
import { copyBaseFromPeer } from './base-copy'
import { pullBlock } from './block-pull'
import { pullFault } from './pull-fault'
import type { BlockStore } from './block-store'
import { UkaiError } from '../errors'
import { StorageClient } from './client'
import type { Unary } from './rpc-answers'
import type { StorageHandlers } from './wire'

// The addresses node `id` registered (its record's and its liveness record's), or null when no
// such node is registered. The daemon answers from ZooKeeper, from a cache unless `fresh`.
export type RegisteredPeer = (id: string, fresh: boolean) => Promise<string[] | null>

// Clients to peers for the copies, one per (node, address); closed with the server.
export class PeerClients {
  private readonly clients = new Map<string, StorageClient>()

  constructor (private readonly peerAddresses: Record<string, string> | undefined, private readonly registered?: RegisteredPeer) {}

  // The client for node `id`, at its configured address, else at `address` — which must be one
  // the node registered: a caller may not make this node connect anywhere it likes (issue 12).
  async get (id: string, address: string): Promise<StorageClient> {
    let at = this.peerAddresses?.[id]
    if (at === undefined) {
      if (this.registered !== undefined) {
        let known = await this.registered(id, false)
        if (known === null || !known.includes(address)) known = await this.registered(id, true)  // moved since cached?
        if (known === null) throw new UkaiError('PERMISSION_DENIED', `no storage node '${id}' is registered: refusing to copy from it`)
        if (!known.includes(address)) throw new UkaiError('PERMISSION_DENIED', `storage node ${id} is registered at ${known.join(', ')}, not ${address}: refusing to connect there`)
      }
      at = address
    }
    const key = `${id}@${at}`
    let c = this.clients.get(key)
    if (c === undefined) { c = new StorageClient({ nodeId: id, address: at }); this.clients.set(key, c) }
    return c
  }

  async close (): Promise<void> {
    await Promise.all([...this.clients.values()].map(async c => { await c.close() }))
  }
}

export interface CopyHandlerDeps {
  nodeId: string
  store: Pick<BlockStore, 'copyBase' | 'hasVersions' | 'stageVersion' | 'discard' | 'write' | 'syncBlock'>
  peers: Pick<PeerClients, 'get'>
  unary: Unary
}

// One pull of a block at a time on this node. A caller that gave up on a pull (its deadline, or
// its client found the node hung and cancelled) may ask again at once; the first pull may still
// be running here, and if it wrote after the second finished — after the executor released the
// block's copy lock and a guest wrote the block — it would put old bytes over new ones on a
// replica about to be marked in sync. So a pull waits for the previous pull of its block to end,
// and a pull whose caller is gone stops at its next step (block-pull.ts): a retry is safe.
// Probes store nothing and skip the queue.
class PullQueue {
  private readonly running = new Map<string, Promise<void>>()

  async run<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.running.get(key)
    const run = (async () => {
      if (before !== undefined) await before
      return await fn()
    })()
    // Only its end matters to the next pull of the block; its own caller gets its error.
    const ended = run.then(() => undefined, () => undefined)
    this.running.set(key, ended)
    try {
      return await run
    } finally {
      if (this.running.get(key) === ended) this.running.delete(key)
    }
  }
}

export function copyHandlers (deps: CopyHandlerDeps): Pick<StorageHandlers, 'PullBlock' | 'CopyBase'> {
  const { store, peers, unary } = deps
  const pulls = new PullQueue()
  return {
    PullBlock: unary('pull block', async (r, cancelled) => {
      const pull = async (): Promise<{ bytes: number }> => {
        if (r.probe !== true) pullFault()  // tests fault the copies, not the plan's link probe
        return { bytes: await pullBlock(store, await peers.get(r.sourceNode, r.sourceAddress), r, cancelled) }
      }
      return r.probe === true ? await pull() : await pulls.run(`${r.diskUuid}/${r.block}`, pull)
    }),
    CopyBase: unary('copy base', async (r) => {
      if (r.sourceNode === '' || r.sourceNode === deps.nodeId) {
        const result = await store.copyBase(r.diskUuid, r.block, r.epoch, r.baseUuid, r.baseEpoch, r.leaseEpoch)
        return { result, bytes: 0 }
      }
      return await copyBaseFromPeer(store, await peers.get(r.sourceNode, r.sourceAddress), r)
    })
  }
}
