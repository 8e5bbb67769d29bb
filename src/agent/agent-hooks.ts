// What higher layers (the relocation runner, the NBD sockets) hook into, without vdisk or the
// agent importing them. Its own file so the agent's parts (disk-leases.ts) take the hooks they
// call without importing agent.ts (madge: no cycles).
import { VirtualDisk } from '../vdisk/virtual-disk'

export interface AgentHooks {
  attached?: (disk: VirtualDisk) => void
  detached?: (name: string) => void
  leaseAcquired?: (disk: VirtualDisk) => void
  leaseLost?: (name: string) => void
  // Another host asked for the lease of an open disk and this one hands it over.
  handoverRequested?: (name: string) => void
  // A replica of an open disk failed a write and was marked stale (code: why, e.g. NO_SPACE).
  replicaStale?: (disk: VirtualDisk, node: string, code: string) => void
  // The set of disks, or a disk's owner or mode, may have changed (the NBD sockets follow).
  disksChanged?: () => void
}
