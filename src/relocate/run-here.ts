// Runs an orphaned relocation — one whose disk nobody holds the lease of (its executor crashed,
// or the VM closed the disk) — in this process, without opening the disk and without the write
// lease: the CLI (`ukai relocate --wait`, `finish-migration --wait`) and an agent at start
// (daemons/mount.ts) do this.
//
// Why that is safe (docs/architecture.md "Relocation", "An orphaned relocation"): the run takes
// a fencing epoch (meta/lease.ts takeFencingEpoch: the fence epoch + 1, no lease znode) and
// fences every node of the map with it, so a writer of an older epoch is refused everywhere
// (as at a lease acquisition). Every map change of the run — targets added, blocks marked in
// sync, the flip, a rollback — is one multi conditional on the fence znode still holding our
// epoch (DiskMap's fence guard). A VM that starts writing takes the lease, which moves the fence:
// from then on the nodes refuse our copies (FENCED), no change of ours commits, and the lease
// holder's runner runs the relocation (under its block locks) from the map as it is. So a block
// is marked in sync on a target only by a transaction ordered before any newer writer existed;
// the copy it vouches for finished before that, with no writer of a newer epoch, and writers of
// older epochs fenced. A block copied while the writer appeared stays `syncing` (never read) and
// is copied again by the holder's run.
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { DiskMap } from '../meta/disk-map'
import { FencingEpoch, takeFencingEpoch } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { cliHostName } from '../admin/admin-lease'
import { BlockLocks } from '../lib/block-locks'
import { NodePool } from '../vdisk/node-pool'
import { RelocatableDisk, RelocationOutcome } from './executor'
import { RelocationRunner } from './runner'

// The open record of a lease-free run is named after the host running it plus this.
const OPEN_RECORD_SUFFIX = '.relocation'

// Whether a disk's open records (meta.listOpens) show a lease-free run going on somewhere (a
// CLI's, an agent's, the controller's): the record is an ephemeral, so its runner is alive.
export function leaseFreeRunIn (opens: string[]): string | null {
  const o = opens.find(h => h.endsWith(OPEN_RECORD_SUFFIX))
  return o === undefined ? null : o.slice(0, -OPEN_RECORD_SUFFIX.length)
}

export async function runRelocationHere (meta: MetaStore, name: string, opts: { site?: string, logger?: Logger } = {}): Promise<RelocationOutcome> {
  const log = opts.logger ?? silentLogger
  const host = cliHostName()
  const pool = new NodePool(meta, { host, site: opts.site ?? '', logger: log })
  await pool.start()
  const runner = new RelocationRunner({ meta, pool, host, logger: log })
  try {
    return await runOrphanedRelocation({ meta, pool, runner, host, logger: log }, name)
  } finally {
    await runner.close()
    await pool.close()
  }
}

// The disk of a lease-free run: its own placement map (guarded by the fence), its own copy
// locks (no write of this process goes through them: a writer here takes the lease, which
// supersedes this run), and the fencing epoch, until a newer one is taken.
class LeaseFreeDisk implements RelocatableDisk {
  readonly leaseFree = true
  readonly blockLocks = new BlockLocks()
  private superseded = false

  constructor (readonly name: string, readonly record: { readonly uuid: string }, readonly map: DiskMap, private readonly fencing: FencingEpoch) {}

  get leaseEpoch (): number | null { return this.superseded ? null : this.fencing.leaseEpoch }

  supersede (): void { this.superseded = true }
}

// Runs the disk's relocation lease-free with `runner` (which may be an agent's: a lease the agent
// takes for the disk meanwhile makes the lease holder's run replace this one). 'stopped' when the
// disk has a lease holder (it runs the relocation) or a newer epoch was taken mid-run.
export async function runOrphanedRelocation (ctx: { meta: MetaStore, pool: NodePool, runner: RelocationRunner, host: string, logger?: Logger }, name: string): Promise<RelocationOutcome> {
  const { meta, pool, runner } = ctx
  const log = (ctx.logger ?? silentLogger).child({ disk: name, component: 'relocation' })
  // The disk counts as open while the run goes on (as it did while a run held the lease): a
  // delete, a rollback, a flatten or an import is refused meanwhile. Under a name of its own, so
  // the agent's own open record of the disk (a VM) is never dropped by this run, nor this by it.
  const openAs = `${ctx.host}${OPEN_RECORD_SUFFIX}`
  await meta.holdOpenRecord(name, { v: 1, host: openAs, writable: false })
  try {
    return await runFenced({ meta, pool, runner, log }, name)
  } finally {
    await meta.dropOpenRecord(name, openAs).catch(safetyCatch)
  }
}

async function runFenced (ctx: { meta: MetaStore, pool: NodePool, runner: RelocationRunner, log: Logger }, name: string): Promise<RelocationOutcome> {
  const { meta, pool, runner, log } = ctx
  const fencing = await takeFencingEpoch(meta, name)
  if (fencing === null) return 'stopped'
  const map = await DiskMap.follow(meta, name, { fenceVersion: fencing.fenceVersion, logger: log })
  const record = await meta.getDisk(name)
  const disk = new LeaseFreeDisk(name, record, map, fencing)
  // A VM that starts writing takes the lease: stop at the next block (the fence guard and the
  // nodes refuse anything of ours from then on anyway; this only makes the stop prompt).
  let done = false
  const watchLease = (): void => {
    if (done) return
    meta.watchLease(name, () => {
      if (done) return
      meta.fenceVersion(name).then((v) => {
        if (v !== fencing.fenceVersion) { disk.supersede(); return }
        watchLease()
      }, (err) => { safetyCatch(err); disk.supersede() })
    }).catch((err) => { safetyCatch(err); disk.supersede() })
  }
  const unsubscribe = meta.onSession(watchLease)  // watches die with an expired session
  try {
    watchLease()
    // As at a lease acquisition: every node of the map refuses older epochs from now on.
    await pool.fence(map.nodesInMap(), record.uuid, fencing.leaseEpoch, log)
    log.info({ leaseEpoch: fencing.leaseEpoch }, 'running an orphaned relocation without the lease, under a fencing epoch')
    return await (runner.maybeStart(disk) ?? Promise.resolve('stopped' as const))
  } finally {
    done = true
    unsubscribe()
    await map.close()
  }
}
