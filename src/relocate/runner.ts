// Keeps a disk's relocation running wherever its lease is: the agent (or CLI) that holds the
// lease runs it; when the lease moves, the executor stops here and starts on the new holder.
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'
import { VirtualDisk } from '../vdisk/virtual-disk'
import { RelocationExecutor, RelocationOutcome } from './executor'

export class RelocationRunner {
  private readonly meta: MetaStore
  private readonly pool: NodePool
  private readonly host: string
  private readonly log: Logger
  private readonly running = new Map<string, { abort: AbortController, done: Promise<RelocationOutcome> }>()
  private readonly watched = new Set<string>()

  constructor (opts: { meta: MetaStore, pool: NodePool, host: string, logger?: Logger }) {
    this.meta = opts.meta
    this.pool = opts.pool
    this.host = opts.host
    this.log = opts.logger ?? silentLogger
  }

  // Watches the disk's relocation record and starts it whenever this host holds the lease.
  watch (disk: VirtualDisk): void {
    if (this.watched.has(disk.name)) return
    this.watched.add(disk.name)
    const onChange = (): void => {
      if (!this.watched.has(disk.name)) return
      this.meta.getRelocation(disk.name, onChange).then(() => this.maybeStart(disk), safetyCatch)
    }
    onChange()
  }

  unwatch (name: string): void {
    this.watched.delete(name)
    this.stop(name)
  }

  // Starts the executor if a relocation wants running and we hold the lease.
  maybeStart (disk: VirtualDisk): Promise<RelocationOutcome> | null {
    const cur = this.running.get(disk.name)
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
    this.running.set(disk.name, { abort, done })
    return done
  }

  stop (name: string): void {
    this.running.get(name)?.abort.abort()
  }

  isRunning (name: string): boolean { return this.running.has(name) }

  async close (): Promise<void> {
    for (const [name, r] of this.running) { r.abort.abort(); await r.done.catch(() => {}); this.running.delete(name) }
    this.watched.clear()
  }
}
