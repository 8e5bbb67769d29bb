// Reading one block range from a disk's replicas: nearest in-sync replica first, the next on
// failure, and when none answers, retry until the deadline. Shared by the head (VirtualDisk),
// snapshots and clone parents (EpochReader).
//
// A replica whose node answers CHECKSUM holds rotten bytes for this block (the node refused to
// serve them): the read goes on to the next replica, and once another one answered good bytes
// the rotten replicas are reported (`onCorrupt`: the disk marks them stale, so repair copies
// the block again and no later read or write picks them). Only then: a block whose every
// replica failed its check keeps them all — the error reaches the caller, nothing is dropped.
import { UkaiError, isUkaiError } from '../errors'
import { Replica } from '../meta/placement'
import { NodePool } from './node-pool'
import { sleep } from '../lib/timers'

// Pause between rounds of retries while no replica answers (reads here, writes in VirtualDisk).
export const IO_RETRY_PAUSE_MS = 200

export interface ReplicaReadArgs {
  pool: NodePool
  candidates: () => Replica[]    // re-evaluated on every retry round (the map may change)
  diskUuid: string
  block: number
  epoch: number
  offset: number
  length: number
  // A clone's block with no version of its own is NOT_FOUND on an in-sync replica: answer null
  // so the caller reads the parent instead.
  absentAsNull: boolean
  ioRetryMs: number
  what: string                   // 'block 3 of vm01' for errors
  onCorrupt?: (nodes: string[]) => Promise<void>
}

export async function readFromReplicas (a: ReplicaReadArgs): Promise<Buffer | null> {
  const deadline = Date.now() + a.ioRetryMs
  for (;;) {
    const candidates = a.candidates()
    const errors: string[] = []
    const corrupt: string[] = []
    const good = async <T>(answer: T): Promise<T> => {
      if (corrupt.length > 0 && a.onCorrupt !== undefined) await a.onCorrupt(corrupt)
      return answer
    }
    for (const r of candidates) {
      let data: Buffer | null
      try {
        data = await a.pool.readClient(r.node).read({ diskUuid: a.diskUuid, block: a.block, epoch: a.epoch, offset: a.offset, length: a.length, absentNotFound: a.absentAsNull })
        if (data.length !== a.length) throw UkaiError.io(`node ${r.node} returned ${data.length} bytes for a ${a.length}-byte read`)
      } catch (err) {
        if (a.absentAsNull && isUkaiError(err, 'NOT_FOUND')) data = null
        else {
          if (isUkaiError(err, 'CHECKSUM')) corrupt.push(r.node)
          errors.push(`${r.node}: ${(err as Error).message}`)
          continue
        }
      }
      return await good(data)
    }
    if (corrupt.length > 0 && corrupt.length === candidates.length) {
      throw UkaiError.checksum(`${a.what}: every in-sync replica failed its checksum (${errors.join('; ')})`)
    }
    if (candidates.length === 0 || Date.now() >= deadline) {
      throw UkaiError.io(`${a.what}: no in-sync replica could be read (${errors.join('; ') || 'none in sync'})`)
    }
    await sleep(IO_RETRY_PAUSE_MS)
  }
}
