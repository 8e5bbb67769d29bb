// The controller: the owner of cluster-wide background work that is neither a foreground CLI's
// nor a disk's lease holder's (docs/architecture.md "The controller"). Every candidate — each
// agent (`ukai mount`, unless --no-controller) and any standalone `ukai controller` daemon —
// joins one ZooKeeper election (meta/election.ts); the leader starts its duties, a standby takes
// over within about a session timeout of the leader's death, and a leader that loses its session
// (or ZooKeeper for two thirds of it) closes its duties at once.
//
// Duties are given as factories, a fresh set per leadership term: adding one (node lifecycle,
// scrub) is one more entry in the list the daemon passes (controller/duties.ts).
import { isUkaiError, safetyCatch } from '../errors'
import { Lifecycle } from '../lib/lifecycle'
import { Logger } from '../log'
import { Election } from '../meta/election'
import { ControllerDutyStatus, ControllerKind } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { RelocationRunner } from '../relocate/runner'
import { NodePool } from '../vdisk/node-pool'
import { ControllerDuty, DutyContext, DutyFactory } from './duty'

// How often the leader publishes what its duties do (`ukai controller status`).
export const CONTROLLER_REPORT_INTERVAL_MS = 2000

export interface ControllerOptions {
  meta: MetaStore
  host: string
  site?: string
  kind: ControllerKind
  duties: DutyFactory[]
  logger: Logger
  // An agent's own pool and runner (see DutyContext); a daemon gets its own.
  pool?: NodePool
  runner?: RelocationRunner
  suspendAfterMs?: number
}

export class Controller {
  private readonly opts: ControllerOptions
  private readonly log: Logger
  private election: Election | null = null
  private ownPool: NodePool | null = null
  private ownRunner: RelocationRunner | null = null
  private ctx: DutyContext | null = null
  private duties: ControllerDuty[] = []
  private failed = new Map<string, string>()  // duty name → why its start failed (this term)
  // Term changes run one after another: a new term starts only once the last one's duties closed.
  private chain: Promise<void> = Promise.resolve()
  private reportTimer: NodeJS.Timeout | null = null

  constructor (opts: ControllerOptions) {
    this.opts = opts
    this.log = opts.logger.child({ component: 'controller' })
  }

  get isLeader (): boolean { return this.election?.isLeader === true }

  private readonly life = new Lifecycle({
    open: async () => {
      const { meta, host } = this.opts
      let pool = this.opts.pool
      if (pool === undefined) {
        pool = this.ownPool = new NodePool(meta, { host, site: this.opts.site ?? '', logger: this.opts.logger })
        await pool.start()
      }
      const runner = this.opts.runner ?? (this.ownRunner = new RelocationRunner({ meta, pool, host, logger: this.opts.logger }))
      this.ctx = { meta, pool, runner, host, logger: this.opts.logger }
      this.election = new Election({
        meta,
        candidate: { v: 1, host, kind: this.opts.kind, pid: process.pid, startedAtMs: Date.now() },
        hooks: { elected: () => this.termStarts(), deposed: (why) => this.termEnds(why) },
        logger: this.opts.logger,
        suspendAfterMs: this.opts.suspendAfterMs
      })
      await this.election.start()
    },
    release: async () => {
      await this.election?.close()   // deposes: the duties close
      await this.chain
      await this.ownRunner?.close()
      await this.ownPool?.close()
    }
  })

  ready (): Promise<void> { return this.life.ready() }
  close (): Promise<void> { return this.life.close() }

  private termStarts (): void {
    this.chain = this.chain.then(async () => {
      if (!this.isLeader || this.ctx === null) return
      const ctx = this.ctx
      this.failed = new Map()
      this.duties = []
      for (const make of this.opts.duties) {
        let duty: ControllerDuty | null = null
        try {
          duty = make(ctx)
          await duty.start()
          this.duties.push(duty)
        } catch (err) {
          safetyCatch(err)
          const name = duty?.name ?? '(unnamed)'
          this.failed.set(name, String(err))
          this.log.error({ duty: name, err: String(err) }, 'controller duty did not start; the others run')
          if (duty !== null) await duty.close().catch(safetyCatch)
        }
      }
      this.log.info({ duties: this.duties.map(d => d.name) }, 'controller duties started')
      this.reportSoon(0)
    }).catch(safetyCatch)
  }

  // Closes the duties at once (not queued behind a start: a deposed leader must stop acting).
  private termEnds (why: string): void {
    if (this.reportTimer !== null) { clearTimeout(this.reportTimer); this.reportTimer = null }
    const closing = this.duties.splice(0)
    this.log.warn({ why, duties: closing.map(d => d.name) }, 'controller duties stop')
    const closed = Promise.all(closing.map(async d => await d.close().catch((err) => {
      safetyCatch(err)
      this.log.error({ duty: d.name, err: String(err) }, 'controller duty failed to close')
    })))
    this.chain = this.chain.then(async () => { await closed }).catch(safetyCatch)
  }

  status (): ControllerDutyStatus[] {
    const out: ControllerDutyStatus[] = this.duties.map(d => ({ name: d.name, ...(d.status?.() ?? { state: 'running' }) }))
    for (const [name, err] of this.failed) out.push({ name, state: 'failed', detail: { err } })
    return out
  }

  private reportSoon (delayMs = CONTROLLER_REPORT_INTERVAL_MS): void {
    if (this.reportTimer !== null || !this.isLeader) return
    this.reportTimer = setTimeout(() => {
      this.reportTimer = null
      if (!this.isLeader) return
      this.election?.report(this.status()).catch((err) => {
        if (!isUkaiError(err)) throw err
        this.log.warn({ err: String(err) }, 'could not publish the controller status')
      }).catch(safetyCatch).finally(() => { this.reportSoon() })
    }, delayMs)
    this.reportTimer.unref()
  }
}
