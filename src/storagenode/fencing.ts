// Fencing: per disk, the newest lease epoch the node has seen (DATA/disks/<uuid>/fence). A
// write, flush, discard or copy under an older epoch is refused (FENCED): that is what makes
// lease hand-over at live migration, agent crashes and split brain safe (DESIGN.md, "Write path
// and ownership"). The epoch is persisted before an operation admitted under it is
// acknowledged, so a node restart never forgets a fence it answered.
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { UkaiError } from '../errors'
import type { DiskState } from './disks'
import type { TranslateError } from './store-errors'

export const FENCE_FILE = 'fence'
// Lease epochs grow by one per lease acquisition (meta/lease.ts), so a jump of more than this
// over the node's fence is no lease a cluster handed out: a bug or a rogue caller, and accepting
// it would fence every real writer out for good (the probe raised one to 2^53-1). 2^20
// acquisitions is a migration a minute for two years while this node missed every one.
export const FENCE_STEP_MAX = 2 ** 20

export interface FencingDeps {
  nodeId: string
  ensureDir: (disk: DiskState) => Promise<void>
  fsync: (fh: { sync: () => Promise<void> }) => Promise<void>
  syncDir: (dir: string) => Promise<void>
  translate: TranslateError
}

export class Fencing {
  constructor (private readonly deps: FencingDeps) {}

  // Synchronous so the fence decision is made in arrival order. The returned promise resolves
  // when the epoch the op was admitted under is durable; ops await it before acknowledging.
  admit (disk: DiskState, leaseEpoch: number): Promise<void> {
    if (leaseEpoch < disk.fenceEpoch) {
      throw UkaiError.fenced(`storage node ${this.deps.nodeId}: disk ${disk.uuid}: lease epoch ${leaseEpoch} is older than ${disk.fenceEpoch}`)
    }
    if (leaseEpoch > disk.fenceEpoch) this.raise(disk, leaseEpoch)
    return disk.fenceDurable
  }

  // Raises the disk's minimum lease epoch (never lowers) and waits for mutations admitted under
  // older epochs to finish, so nothing from a fenced writer lands after this returns.
  async fence (disk: DiskState, leaseEpoch: number): Promise<number> {
    if (leaseEpoch > disk.fenceEpoch) this.raise(disk, leaseEpoch)
    await Promise.allSettled([...disk.inflight])
    await disk.fenceDurable
    return disk.fenceEpoch
  }

  // An admitted mutation: a fence waits for it to end.
  async track<T> (disk: DiskState, op: Promise<T>): Promise<T> {
    disk.inflight.add(op)
    try {
      return await op
    } finally {
      disk.inflight.delete(op)
    }
  }

  private raise (disk: DiskState, leaseEpoch: number): void {
    if (!Number.isSafeInteger(leaseEpoch) || leaseEpoch - disk.fenceEpoch > FENCE_STEP_MAX) {
      throw UkaiError.badArgument(`storage node ${this.deps.nodeId}: disk ${disk.uuid}: lease epoch ${leaseEpoch} is more than ${FENCE_STEP_MAX} above the fence ${disk.fenceEpoch}: no lease hands that out`)
    }
    disk.fenceEpoch = leaseEpoch
    // Chained so fence files are written in increasing order; a failed write does not block later ones.
    disk.fenceDurable = disk.fenceDurable.catch(() => {}).then(async () => await this.persist(disk, leaseEpoch))
  }

  private async persist (disk: DiskState, leaseEpoch: number): Promise<void> {
    try {
      await this.deps.ensureDir(disk)
      const file = path.join(disk.dir, FENCE_FILE)
      const tmp = file + '.tmp'
      const fh = await fsp.open(tmp, 'w', 0o600)
      try {
        await fh.writeFile(`${leaseEpoch}\n`)
        await this.deps.fsync(fh)
      } finally {
        await fh.close()
      }
      await fsp.rename(tmp, file)
      await this.deps.syncDir(disk.dir)
    } catch (err) {
      throw this.deps.translate(err, `persist fence of disk ${disk.uuid}`)
    }
  }
}

// The epoch a fence file holds (read by the start-up scan).
export async function readFenceFile (file: string): Promise<number> {
  const epoch = Number((await fsp.readFile(file, 'utf8')).trim())
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new UkaiError('DATA_DIR', `corrupt fence file ${file}`)
  return epoch
}
