// What both daemons' metrics share: the registry (labelled with the daemon's identity), the
// ZooKeeper session series, readiness (/healthz and `ukai_daemon_ready`), and the sources the
// scrape reads once the daemon runs. AgentMetrics and NodeMetrics add their own series.
import type { Registry } from 'prom-client'
import { newRegistry } from './endpoint'
import { Readiness } from './readiness'
import { ZkSessionMetrics, ZkSessionSource } from './zookeeper-session'

export abstract class DaemonMetrics<S extends { zk: ZkSessionSource }> {
  readonly registry: Registry
  protected sources: S | null = null
  private readonly zkSession: ZkSessionMetrics
  private readonly readiness: Readiness

  protected constructor (daemon: 'mount' | 'storagenode', identity: Record<string, string>) {
    this.registry = newRegistry(identity)
    this.zkSession = new ZkSessionMetrics(this.registry)
    this.readiness = new Readiness(this.registry, daemon, this.zkSession)
  }

  bind (sources: S): void {
    this.sources = sources
    this.zkSession.bind(sources.zk)
  }

  // The daemon serves (the mount exists; the node answers and is registered): /healthz may say
  // ok, while ZooKeeper is connected, until setStopping().
  setReady (): void { this.readiness.ready() }
  setStopping (): void { this.readiness.stopping() }
  notReady (): string | null { return this.readiness.why() }

  close (): void { this.zkSession.close() }
}
