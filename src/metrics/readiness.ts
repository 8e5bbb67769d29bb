// What /healthz answers and `ukai_daemon_ready` shows: a daemon is ready once it serves and
// until it begins to stop, and only while its ZooKeeper session is connected.
import type { Registry } from 'prom-client'
import { registerCollected } from './exposition'
import type { ZkSessionMetrics } from './zookeeper-session'

export class Readiness {
  private state: 'starting' | 'ready' | 'stopping' = 'starting'

  constructor (registry: Registry, private readonly daemon: 'mount' | 'storagenode', private readonly zk: ZkSessionMetrics) {
    registerCollected(registry, 'ukai_daemon_ready', '1 while the daemon serves (started and not stopping), 0 otherwise', 'gauge',
      () => [{ labels: { daemon }, value: this.state === 'ready' ? 1 : 0 }])
  }

  ready (): void { if (this.state === 'starting') this.state = 'ready' }
  stopping (): void { this.state = 'stopping' }

  // null when ready; otherwise why not.
  why (): string | null {
    const what = this.daemon === 'mount' ? 'the agent' : 'the storage node'
    if (this.state === 'starting') return `${what} is starting`
    if (this.state === 'stopping') return `${what} is stopping`
    if (!this.zk.connected) return 'the ZooKeeper session is not connected'
    return null
  }
}
