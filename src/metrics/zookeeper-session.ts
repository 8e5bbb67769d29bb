// The ZooKeeper session as both daemons report it: connected or not, and how often the server
// expired it (each expiry re-creates ephemerals and leases, see src/meta/store.ts).
import type { Registry } from 'prom-client'
import { registerCollected } from './exposition'

export interface ZkSessionSource {
  isConnected: boolean
  onExpired: (fn: () => void) => () => void
}

export class ZkSessionMetrics {
  private source: ZkSessionSource | null = null
  private expirations = 0
  private unsubscribe: (() => void) | null = null

  constructor (registry: Registry) {
    registerCollected(registry, 'ukai_zookeeper_session_connected', '1 while the ZooKeeper session is connected, 0 otherwise (also before the first connect)', 'gauge',
      () => [{ labels: {}, value: this.connected ? 1 : 0 }])
    registerCollected(registry, 'ukai_zookeeper_session_expirations_total', 'ZooKeeper sessions the server expired (a new one replaced each)', 'counter',
      () => [{ labels: {}, value: this.expirations }])
  }

  get connected (): boolean { return this.source?.isConnected === true }

  bind (source: ZkSessionSource): void {
    this.unsubscribe?.()
    this.source = source
    this.unsubscribe = source.onExpired(() => { this.expirations++ })
  }

  close (): void { this.unsubscribe?.(); this.unsubscribe = null }
}
