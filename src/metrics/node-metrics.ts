// The storage node's metrics (`ukai storagenode --metrics-listen`): capacity and used bytes,
// block versions, requests and their latency by call (label `rpc`: an Io operation — read,
// write, flush, discard — or a unary method such as pull_block), errors by code, fsyncs; its
// ZooKeeper session; process metrics. docs/metrics.md lists every name.
//
// The data path reaches this only through RpcObserver (src/storagenode/rpc-answers.ts); the
// rest is read at scrape time from the server's stats.
import type { RpcObserver } from '../storagenode/rpc-answers'
import type { StorageServerStats } from '../storagenode/server'
import { LatencyHistogram, Sample, perKey, registerCollected } from './exposition'
import { DaemonMetrics } from './daemon-metrics'
import { ZkSessionSource } from './zookeeper-session'

export interface NodeUsage { capacityBytes: number, usedBytes: number, freeBytes: number }

// What the metrics read of a running node, at scrape time.
export interface NodeSources {
  zk: ZkSessionSource
  stats: () => StorageServerStats
  usage: () => NodeUsage   // the last usage report (capacity: the quota or the file system's)
}

class RpcSeries {
  constructor (readonly label: string) {}
  requests = 0
  errors = 0
  latency = new LatencyHistogram()
}

export class NodeMetrics extends DaemonMetrics<NodeSources> implements RpcObserver {
  // Keys: a fixed set of calls and of error codes (bounded by the code, not by the traffic).
  private readonly rpcs = new Map<string, RpcSeries>()
  private readonly errorCodes = new Map<string, number>()

  constructor (nodeId: string) {
    super('storagenode', { node: nodeId })
    const r = this.registry
    const stat = (name: string, help: string, type: 'counter' | 'gauge', value: (s: StorageServerStats) => number): void =>
      registerCollected(r, name, help, type, () => this.sources === null ? [] : [{ labels: {}, value: value(this.sources.stats()) }])
    const usage = (name: string, help: string, value: (u: NodeUsage) => number): void =>
      registerCollected(r, name, help, 'gauge', () => this.sources === null ? [] : [{ labels: {}, value: value(this.sources.usage()) }])
    usage('ukai_node_capacity_bytes', 'Bytes this node may store (--capacity, else its file system\'s size)', u => u.capacityBytes)
    stat('ukai_node_used_bytes', 'Bytes allocated by block versions on this node', 'gauge', s => s.usedBytes)
    usage('ukai_node_free_bytes', 'Bytes this node may still store (as of its last usage report)', u => u.freeBytes)
    stat('ukai_node_block_versions', 'Block version files this node holds', 'gauge', s => s.versionFiles)
    stat('ukai_node_fsyncs_total', 'fsyncs of block files and directories', 'counter', s => s.fsyncs)
    stat('ukai_node_read_bytes_total', 'Bytes read from this node\'s block versions over Io', 'counter', s => s.bytesRead)
    stat('ukai_node_write_bytes_total', 'Bytes written to this node\'s block versions over Io', 'counter', s => s.bytesWritten)
    stat('ukai_node_io_streams', 'Open Io streams (about one per agent and peer)', 'gauge', s => s.streams)
    stat('ukai_node_requests_in_flight', 'Io requests being served', 'gauge', s => s.inFlight)
    stat('ukai_node_open_files', 'Block files held open', 'gauge', s => s.openFiles)
    const perRpc = (value: (s: RpcSeries) => number): Sample[] => [...this.rpcs.values()].map(s => ({ labels: { rpc: s.label }, value: value(s) }))
    registerCollected(r, 'ukai_node_requests_total', 'Requests answered, by call', 'counter', () => perRpc(s => s.requests))
    registerCollected(r, 'ukai_node_request_errors_total', 'Requests answered with an error, by call', 'counter', () => perRpc(s => s.errors))
    registerCollected(r, 'ukai_node_errors_total', 'Requests answered with an error, by UKAI error code (docs/errors.md)', 'counter', () => perKey(this.errorCodes, 'code', n => n))
    registerCollected(r, 'ukai_node_request_latency_seconds', 'Time from taking a request up to its answer, by call', 'histogram', () => {
      const out: Sample[] = []
      for (const s of this.rpcs.values()) s.latency.samples('ukai_node_request_latency_seconds', { rpc: s.label }, out)
      return out
    })
  }

  done (rpc: string, startMs: number, code: string): void {
    let s = this.rpcs.get(rpc)
    if (s === undefined) { s = new RpcSeries(rpc.replace(/ /g, '_')); this.rpcs.set(rpc, s) }  // 'pull block' → pull_block
    s.requests++
    s.latency.observeSince(startMs)
    if (code !== '') {
      s.errors++
      this.errorCodes.set(code, (this.errorCodes.get(code) ?? 0) + 1)
    }
  }
}
