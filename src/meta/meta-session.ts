// The ZooKeeper session under a MetaStore (store.ts): the client, its session events
// (onSession, onExpired, isConnected), the cluster's base directories and config, the ephemerals
// the store holds (ephemerals.ts) and the rule for background reports (quietly: never wait for
// ZooKeeper, log a failure once per outage). Separate from the records so that what every record
// owner relies on is in one place; MetaStore builds on it through host-records.ts.
// The client is private to src/meta (protected here, for the store's own files only); callers
// elsewhere get typed methods and session events; test/meta-boundary.test.ts keeps it that way.
import { UkaiError, safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { BASE_DIRS, ClusterConfig, DEFAULT_CONFIG, decodeJson, encodeJson, paths } from './schema'
import { ZkClient } from './zk-client'
import { Lifecycle } from '../lib/lifecycle'
import { HeldEphemerals } from './ephemerals'

// A background report waits at most this long for ZooKeeper (the next one comes soon anyway).
export const BACKGROUND_REPORT_TIMEOUT_MS = 2000

export class MetaSession {
  protected readonly zk: ZkClient
  protected readonly log: Logger
  protected readonly ephemerals: HeldEphemerals
  // Background reports that failed since ZooKeeper was last reachable: logged once per outage.
  private readonly quietFailures = new Set<string>()

  constructor (zk: ZkClient, logger: Logger = silentLogger) {
    this.zk = zk
    this.log = logger
    this.ephemerals = new HeldEphemerals(zk, logger)
    zk.on('connected', () => {
      if (this.quietFailures.size > 0) this.log.info({ reports: [...this.quietFailures] }, 'ZooKeeper reachable again; background reports resume')
      this.quietFailures.clear()
    })
  }

  private readonly life = new Lifecycle({ release: async () => { await this.zk.close() } })

  // The session closed: its ephemerals (node liveness, leases) vanish. Close it last.
  close (): Promise<void> { return this.life.close() }

  // --- session ------------------------------------------------------------------------------

  // Whether ZooKeeper is reachable right now (the session may still be alive while it is not).
  get isConnected (): boolean { return this.zk.isConnected }

  // A new session replaced an expired one: the old session's watches and ephemerals are gone,
  // so owners set their watches again (ephemerals held here are re-created by the store).
  // Returns a function that unsubscribes.
  onSession (fn: () => void): () => void { return this.subscribe('session', fn) }

  // The server expired our session (news only: the new session follows with onSession).
  onExpired (fn: () => void): () => void { return this.subscribe('expired', fn) }

  private subscribe (event: 'session' | 'expired', fn: () => void): () => void {
    this.zk.on(event, fn)
    return () => { this.zk.off(event, fn) }
  }

  // Creates the base directories and the default config once per cluster; idempotent.
  async init (): Promise<void> {
    if (await this.zk.exists(paths.config) !== null && await this.zk.exists(BASE_DIRS[BASE_DIRS.length - 1]) !== null) return
    for (const dir of BASE_DIRS) await this.ensure(dir)
    try {
      await this.zk.create(paths.config, encodeJson(DEFAULT_CONFIG))
    } catch (err) {
      if ((err as UkaiError).code !== 'ALREADY_EXISTS') throw err
    }
  }

  private async ensure (path: string): Promise<void> {
    try {
      await this.zk.create(path, Buffer.alloc(0))
    } catch (err) {
      if ((err as UkaiError).code !== 'ALREADY_EXISTS') throw err
    }
  }

  async config (): Promise<ClusterConfig> {
    return (await this.configWithVersion()).config
  }

  async configWithVersion (): Promise<{ config: ClusterConfig, version: number }> {
    const got = await this.zk.get(paths.config)
    return { config: decodeJson<ClusterConfig>(got.data, 'cluster config'), version: got.stat.version }
  }

  // Conditional on the version read (ZK_CONFLICT when someone changed it meanwhile).
  async setConfig (config: ClusterConfig, version: number): Promise<void> {
    await this.zk.set(paths.config, encodeJson(config), version)
  }

  // --- ephemerals (src/meta/ephemerals.ts) -----------------------------------------------------

  // Creates an ephemeral node now and again after every session replacement, until dropped
  // (see HeldEphemerals.hold for `waitMs`).
  async holdEphemeral (path: string, data: () => Buffer, opts: { waitMs?: number } = {}): Promise<void> {
    await this.ephemerals.hold(path, data, opts)
  }

  // Stops re-creating the ephemeral and removes it (later, when ZooKeeper is away).
  async dropEphemeral (path: string): Promise<void> {
    await this.ephemerals.drop(path)
  }

  // Background reports (round trips, usage figures) never wait for ZooKeeper and never fail
  // their caller: while it is unreachable a report is skipped, and the failure is logged once
  // per outage. Nothing that holds a lease or serves I/O depends on them.
  protected async quietly (what: string, fn: () => Promise<void>): Promise<void> {
    if (!this.zk.isConnected) { this.quietFailure(what, 'ZooKeeper is not connected'); return }
    try {
      await fn()
    } catch (err) {
      safetyCatch(err)
      this.quietFailure(what, String(err))
    }
  }

  private quietFailure (what: string, why: string): void {
    if (this.quietFailures.has(what)) return
    this.quietFailures.add(what)
    this.log.warn({ report: what, why }, 'background report skipped while ZooKeeper is unavailable (logged once per outage)')
  }
}
