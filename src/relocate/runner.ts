// Keeps a disk's relocation running wherever its lease is: the agent (or CLI) that holds the
// lease runs it; when the lease moves, the executor stops here and starts on the new holder.
import { safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger, silentLogger } from '../log'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'
import { RelocatableDisk, RelocationExecutor, RelocationOutcome } from './executor'

// A watch is set only by a read that succeeded: after a failed one (ZooKeeper away longer than a
// call's bound) the read is tried again this much later, so the watch is never silently lost.
const WATCH_RETRY_MS = 1000

export class RelocationRunner {
  private readonly meta: MetaStore
  private readonly pool: NodePool
  private readonly host: string
  private readonly log: Logger
  private readonly running = new Map<string, { disk: RelocatableDisk, abort: AbortController, done: Promise<RelocationOutcome> }>()
  // Watched disks and the current watch chain of each: a chain from an earlier session (or
  // an earlier watch of the same name) stops at its next step instead of doubling the reads.
  private readonly watched = new Map<string, { disk: RelocatableDisk, chain: object, onChange: () => void }>()
  // One watcher function per disk, handed to ZooKeeper by every chain: the client keeps each
  // distinct function it is given until the znode changes, so a fresh closure per chain piled
  // up on a record that does not change (a done relocation; a disk opened and closed again and
  // again) — MaxListenersExceededWarning in the agent's log. The same function is kept once.
  private readonly zkWatchers = new Map<string, () => void>()
  private readonly unsubscribeSession: () => void
  private closed = false

  constructor (opts: { meta: MetaStore, pool: NodePool, host: string, logger?: Logger }) {
    this.meta = opts.meta
    this.pool = opts.pool
    this.host = opts.host
    this.log = opts.logger ?? silentLogger
    // Watches die with an expired session: set them again on the new one, else a relocation
    // started after the expiry is never noticed here (the lease holder is the one to run it).
    this.unsubscribeSession = this.meta.onSession(() => {
      for (const w of this.watched.values()) this.arm(w.disk)
    })
  }

  // Watches the disk's relocation record and starts it whenever this host holds the lease.
  watch (disk: RelocatableDisk): void {
    if (this.watched.has(disk.name)) return
    this.arm(disk)
  }

  // Starts a new watch chain for the disk: read the record with a watch, maybe start, and on
  // every change read (and watch) again.
  private arm (disk: RelocatableDisk): void {
    const chain = {}
    const current = (): boolean => !this.closed && this.watched.get(disk.name)?.chain === chain
    const onChange = (): void => {
      if (!current()) return
      this.meta.getRelocation(disk.name, this.zkWatcher(disk.name)).then(() => this.maybeStart(disk), (err) => {
        safetyCatch(err)
        if (current()) setTimeout(onChange, WATCH_RETRY_MS).unref()
      })
    }
    this.watched.set(disk.name, { disk, chain, onChange })
    onChange()
  }

  // Runs the disk's current chain (an old chain's watch fires into the new one, which reads again).
  private zkWatcher (name: string): () => void {
    let w = this.zkWatchers.get(name)
    if (w === undefined) {
      w = () => { this.watched.get(name)?.onChange() }
      this.zkWatchers.set(name, w)
    }
    return w
  }

  unwatch (name: string): void {
    this.watched.delete(name)
    this.stop(name)
  }

  // Starts the executor if a relocation wants running and we hold the lease.
  maybeStart (disk: RelocatableDisk): Promise<RelocationOutcome> | null {
    const cur = this.running.get(disk.name)
    if (cur !== undefined && cur.disk.leaseFree === true && disk.leaseFree !== true && disk.leaseEpoch !== null) {
      // A lease-free run (an orphan this process picked up) gives way to the lease holder's:
      // it stops first (its fencing epoch is superseded anyway), so the two never write the
      // record at once under the same host name.
      cur.abort.abort()
      return cur.done.catch(() => 'stopped' as const).then(async () => await (this.maybeStart(disk) ?? 'stopped' as const))
    }
    if (cur !== undefined) return cur.done
    if (disk.leaseEpoch === null) return null
    const abort = new AbortController()
    const done = (async (): Promise<RelocationOutcome> => {
      const rec = await this.meta.getRelocation(disk.name)
      if (rec === null || rec.state === 'done' || rec.state === 'paused' || (rec.state === 'cancelled' && rec.finishedAtMs !== 0)) return 'stopped'
      const exec = new RelocationExecutor({ meta: this.meta, pool: this.pool, disk, host: this.host, logger: this.log })
      return await exec.run(abort.signal)
    })().catch((err) => {
      this.log.error({ disk: disk.name, err: String(err) }, 'relocation executor failed')
      return 'paused' as const
    }).finally(() => { this.running.delete(disk.name) })
    this.running.set(disk.name, { disk, abort, done })
    return done
  }

  // The lease moved away from this host (or its disk closed here). A lease-free run is not
  // this host's lease's: it stops by itself once a newer epoch is taken (run-here.ts).
  stop (name: string): void {
    const r = this.running.get(name)
    if (r !== undefined && r.disk.leaseFree !== true) r.abort.abort()
  }

  // A lease-free run started for the controller stops when it stops leading (the next leader
  // resumes the relocation from its record; stop() above leaves lease-free runs alone).
  abortLeaseFree (name: string): void {
    const r = this.running.get(name)
    if (r !== undefined && r.disk.leaseFree === true) r.abort.abort()
  }

  isRunning (name: string): boolean { return this.running.has(name) }

  // Running relocations are stopped (each resumes from its record later), not waited out.
  private readonly life = new Lifecycle({
    release: async () => {
      this.closed = true
      this.unsubscribeSession()
      for (const [name, r] of this.running) { r.abort.abort(); await r.done.catch(safetyCatch); this.running.delete(name) }
      this.watched.clear()
    }
  })

  close (): Promise<void> { return this.life.close() }
}
