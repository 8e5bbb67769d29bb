// A relocation's last steps, after its flip committed (executor.ts): the dropped nodes' data is
// deleted, and the disk's placement policy follows the move. Neither can lose data: the map
// points only at the targets by then. Each step is idempotent (a crashed run repeats them).
import { isUkaiError } from '../errors'
import { Logger } from '../log'
import type { PlacementMap } from '../meta/disk-map'
import { PlacementPolicy } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'

const PLACEMENT_UPDATE_ATTEMPTS_MAX = 5

// Deletes the disk's data on `nodes` the map no longer points to; returns those that could not
// be reached (their data stays orphaned until cleaned).
export async function dropFarData (deps: { pool: NodePool, disk: { map: Pick<PlacementMap, 'nodesInMap'>, record: { uuid: string }, leaseEpoch: number | null }, nodes: readonly string[], log: Logger }): Promise<string[]> {
  const { pool, disk, log } = deps
  const failed: string[] = []
  for (const node of deps.nodes) {
    if (disk.map.nodesInMap().has(node)) continue
    try {
      await pool.client(node).deleteDisk({ diskUuid: disk.record.uuid, leaseEpoch: disk.leaseEpoch ?? 0 })
    } catch (err) {
      failed.push(node)
      log.warn({ node, err: String(err) }, 'could not delete dropped replica data (orphaned until cleaned)')
    }
  }
  return failed
}

// The disk's placement policy follows a move (`disk list`, and where a grow places new blocks).
export async function adoptPlacement (meta: MetaStore, diskName: string, placement: PlacementPolicy | undefined, log: Logger): Promise<void> {
  if (placement === undefined) return
  for (let attempt = 1; ; attempt++) {
    const { version, ...disk } = await meta.getDisk(diskName)
    if (JSON.stringify(disk.placement) === JSON.stringify(placement)) return
    try {
      await meta.setDiskRecord({ ...disk, placement }, version)
      log.info({ placement }, 'placement policy follows the relocation')
      return
    } catch (err) {
      if (!isUkaiError(err, 'ZK_CONFLICT') || attempt >= PLACEMENT_UPDATE_ATTEMPTS_MAX) throw err
    }
  }
}
