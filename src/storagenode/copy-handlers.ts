// The node-to-node copy handlers: PullBlock (relocation and repair: this node pulls a block's
// versions from a source node, block-pull.ts) and CopyBase (a clone's first write: its block
// copied from the base, locally by the store or from a peer, base-copy.ts). Copy traffic goes
// node to node, never through the hypervisor. Peers are reached at the address this node was
// told for them (a WAN-emulating proxy, `--peer-address`) or else at the one the caller names.
import { copyBaseFromPeer } from './base-copy'
import { pullBlock } from './block-pull'
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

export function copyHandlers (deps: CopyHandlerDeps): Pick<StorageHandlers, 'PullBlock' | 'CopyBase'> {
  const { store, peers, unary } = deps
  return {
    PullBlock: unary('pull block', async (r) => ({ bytes: await pullBlock(store, await peers.get(r.sourceNode, r.sourceAddress), r) })),
    CopyBase: unary('copy base', async (r) => {
      if (r.sourceNode === '' || r.sourceNode === deps.nodeId) {
        const result = await store.copyBase(r.diskUuid, r.block, r.epoch, r.baseUuid, r.baseEpoch, r.leaseEpoch)
        return { result, bytes: 0 }
      }
      return await copyBaseFromPeer(store, await peers.get(r.sourceNode, r.sourceAddress), r)
    })
  }
}
