// The store's control handlers, each one call of the store: fencing (Fence), what a node holds
// (BlockInfo, ListBlocks, LocateBlock for short-circuit reads), garbage collection (DeleteDisk,
// DeleteBlocks, PruneVersions), and the node's health (Stat with the Io budget's figures; Ping,
// answered on the event loop without touching the disk, which is what the agents' hung-replica
// watchdog counts on).
import { UkaiError } from '../errors'
import type { BlockStore } from './block-store'
import type { NodeIoBudget } from './io-budget'
import type { Unary } from './rpc-answers'
import type { Scrubber } from './scrub'
import type { StorageHandlers } from './wire'

export type AdminHandlerNames = 'Fence' | 'BlockInfo' | 'ListBlocks' | 'DeleteDisk' | 'DeleteBlocks' | 'Stat' | 'PruneVersions' | 'LocateBlock' | 'Ping' | 'Scrub'

export interface AdminHandlerDeps {
  store: Pick<BlockStore, 'fence' | 'blockInfo' | 'listBlocks' | 'deleteDisk' | 'deleteBlocks' | 'stat' | 'pruneVersions' | 'locate'>
  budget: Pick<NodeIoBudget, 'stat'>
  scrubber: Pick<Scrubber, 'scrub'>
  unary: Unary
}

export function adminHandlers ({ store, budget, scrubber, unary }: AdminHandlerDeps): Pick<StorageHandlers, AdminHandlerNames> {
  return {
    Fence: unary('fence', async (r) => ({ leaseEpoch: await store.fence(r.diskUuid, r.leaseEpoch) })),
    BlockInfo: unary('block info', async (r) => ({ versions: await store.blockInfo(r.diskUuid, r.block) })),
    ListBlocks: unary('list blocks', async (r) => ({ blocks: store.listBlocks(r.diskUuid) })),
    DeleteDisk: unary('delete disk', async (r) => {
      // Under a lease (an agent's relocation drop, authz.ts): refused once a newer holder fenced.
      if (r.leaseEpoch > 0) {
        const fence = await store.fence(r.diskUuid, r.leaseEpoch)
        if (fence > r.leaseEpoch) throw UkaiError.fenced(`disk ${r.diskUuid}: lease epoch ${r.leaseEpoch} is older than ${fence}`)
      }
      return { freedBytes: await store.deleteDisk(r.diskUuid) }
    }),
    DeleteBlocks: unary('delete blocks', async (r) => ({ freedBytes: await store.deleteBlocks(r.diskUuid, r.blocks) })),
    Stat: unary('stat', async () => ({ ...await store.stat(), ...budget.stat() })),
    PruneVersions: unary('prune versions', async (r) => await store.pruneVersions(r.diskUuid, r.keepEpochs, r.dropNewer, r.leaseEpoch)),
    LocateBlock: unary('locate block', async (r) => store.locate(r.diskUuid, r.block, r.epoch)),
    Ping: unary('ping', async () => ({})),
    Scrub: unary('scrub', async (r) => await scrubber.scrub(r.diskUuid, r.digests))
  }
}
