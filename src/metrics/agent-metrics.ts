// The hypervisor agent's metrics (`ukai mount --metrics-listen`): per disk (label `disk`) the
// guest's reads, writes and fsyncs through the mount with their latency, short-circuit against
// remote read bytes, stale marks and lease changes; the relocations and repairs this agent runs;
// its ZooKeeper session; process metrics. docs/metrics.md lists every name.
//
// The data path reaches this only through DiskIoSink (src/agent/io-sink.ts) and the agent's
// hooks; everything else is read at scrape time from narrow sources bound once the agent runs.
import type { DiskIoSink } from '../agent/io-sink'
import type { DiskIoCounters } from '../meta/schema'
import { LatencyHistogram, Sample, registerCollected, perKey } from './exposition'
import { DaemonMetrics } from './daemon-metrics'
import { ZkSessionSource } from './zookeeper-session'

// A relocation's progress is read from its ZooKeeper record at scrape time (the executor saves
// it every few seconds); a read slower than this keeps the last figures.
const RELOCATION_READ_TIMEOUT_MS = 1000

// paceBytesPerSec: what the copy is slowed to while a node it uses is slow for the guests
// (relocate/copy-pace.ts); 0 while it runs at its rate.
export interface RelocationProgress { progressBytes: number, plannedBytes: number, createdAtMs: number, updatedAtMs: number, paceBytesPerSec: number }

// What the metrics read of a running agent, at scrape time.
export interface AgentSources {
  zk: ZkSessionSource
  disks: () => string[]                                  // every disk this mount shows
  ioTotals: () => Record<string, DiskIoCounters>          // the disk engines' byte counters
  relocating: (disk: string) => boolean                   // runs here now
  relocation: (disk: string) => Promise<RelocationProgress | null>
}

class DiskSeries {
  readOps = 0
  readBytes = 0
  writeOps = 0
  writeBytes = 0
  flushes = 0
  readErrors = 0
  writeErrors = 0
  flushErrors = 0
  staleMarks = 0
  leaseAcquisitions = 0
  leaseHandovers = 0
  leaseLosses = 0
  readLatency = new LatencyHistogram()
  writeLatency = new LatencyHistogram()
  flushLatency = new LatencyHistogram()
  // Exported read bytes by source never go down (remote = all − short-circuit, two counters
  // that are not updated at the same instant).
  shortCircuitReadBytes = 0
  remoteReadBytes = 0
}

interface RelocationSeries extends RelocationProgress { rateBytesPerSec: number }

export class AgentMetrics extends DaemonMetrics<AgentSources> implements DiskIoSink {
  private readonly disks = new Map<string, DiskSeries>()
  private readonly relocations = new Map<string, RelocationSeries>()

  constructor (host: string) {
    super('mount', { host })
    const r = this.registry
    const counter = (name: string, help: string, value: (s: DiskSeries) => number): void =>
      registerCollected(r, name, help, 'counter', () => perKey(this.current(), 'disk', value))
    const histogram = (name: string, help: string, h: (s: DiskSeries) => LatencyHistogram): void =>
      registerCollected(r, name, help, 'histogram', () => {
        const out: Sample[] = []
        for (const [disk, s] of this.current()) h(s).samples(name, { disk }, out)
        return out
      })
    counter('ukai_disk_read_ops_total', 'Reads of the disk answered through the mount', s => s.readOps)
    counter('ukai_disk_read_bytes_total', 'Bytes read from the disk through the mount', s => s.readBytes)
    counter('ukai_disk_write_ops_total', 'Writes to the disk answered through the mount', s => s.writeOps)
    counter('ukai_disk_write_bytes_total', 'Bytes written to the disk through the mount', s => s.writeBytes)
    counter('ukai_disk_flushes_total', 'fsync requests on the disk answered (every replica made the writes durable)', s => s.flushes)
    registerCollected(r, 'ukai_disk_io_errors_total', 'Guest requests on the disk that failed (an errno went back), by op', 'counter', () => {
      const out: Sample[] = []
      for (const [disk, s] of this.current()) {
        out.push({ labels: { disk, op: 'read' }, value: s.readErrors }, { labels: { disk, op: 'write' }, value: s.writeErrors }, { labels: { disk, op: 'flush' }, value: s.flushErrors })
      }
      return out
    })
    histogram('ukai_disk_read_latency_seconds', 'Latency of the disk\'s reads through the mount', s => s.readLatency)
    histogram('ukai_disk_write_latency_seconds', 'Latency of the disk\'s writes through the mount (every replica acknowledged)', s => s.writeLatency)
    histogram('ukai_disk_flush_latency_seconds', 'Latency of the disk\'s fsyncs', s => s.flushLatency)
    registerCollected(r, 'ukai_disk_read_short_circuit_bytes_total', 'Bytes the disk engine read directly from block files of storage nodes on this host', 'counter', () => this.readSources('shortCircuit'))
    registerCollected(r, 'ukai_disk_read_remote_bytes_total', 'Bytes the disk engine read from storage nodes over gRPC (or a clone\'s parent)', 'counter', () => this.readSources('remote'))
    // Flush-behind (src/vdisk/dirty-flush.ts), read from the disk engines' counters.
    const fromEngines = (value: (c: DiskIoCounters) => number | undefined) => (): Sample[] =>
      Object.entries(this.sources?.ioTotals() ?? {}).map(([disk, c]) => ({ labels: { disk }, value: value(c) ?? 0 }))
    registerCollected(r, 'ukai_disk_dirty_blocks', 'Block replicas of the disk written and not yet flushed (durable) on their node', 'gauge', fromEngines(c => c.dirtyBlocks))
    registerCollected(r, 'ukai_disk_flushes_behind_total', 'Background flushes of the disk\'s written blocks (flush-behind, not asked for by the guest)', 'counter', fromEngines(c => c.behindFlushes))
    counter('ukai_disk_stale_marks_total', 'Replicas of the disk marked stale after a failed write', s => s.staleMarks)
    counter('ukai_disk_lease_acquisitions_total', 'Times this agent acquired (or re-asserted) the disk\'s write lease', s => s.leaseAcquisitions)
    counter('ukai_disk_lease_handovers_total', 'Times another host asked for the disk\'s lease and this agent handed it over', s => s.leaseHandovers)
    counter('ukai_disk_lease_losses_total', 'Times this agent lost the disk\'s lease (handed over, expired or taken)', s => s.leaseLosses)
    registerCollected(r, 'ukai_relocation_progress_bytes', 'Bytes copied so far by the relocation or repair of the disk this agent runs', 'gauge', () => this.relocationSamples(s => s.progressBytes))
    registerCollected(r, 'ukai_relocation_planned_bytes', 'Bytes the relocation or repair of the disk has to copy in all', 'gauge', () => this.relocationSamples(s => s.plannedBytes))
    registerCollected(r, 'ukai_relocation_rate_bytes_per_second', 'Copy rate of the relocation or repair between its last two progress reports', 'gauge', () => this.relocationSamples(s => s.rateBytesPerSec))
    registerCollected(r, 'ukai_relocation_pace_bytes_per_second', 'What the relocation or repair is slowed to because a node it uses is slow for the guests (0: not slowed)', 'gauge', () => this.relocationSamples(s => s.paceBytesPerSec))
  }

  // --- the data path (DiskIoSink) -------------------------------------------------------------

  read (disk: string, bytes: number, startMs: number): void {
    const s = this.series(disk)
    s.readOps++
    s.readBytes += bytes
    s.readLatency.observeSince(startMs)
  }

  write (disk: string, bytes: number, startMs: number): void {
    const s = this.series(disk)
    s.writeOps++
    s.writeBytes += bytes
    s.writeLatency.observeSince(startMs)
  }

  flush (disk: string, startMs: number): void {
    const s = this.series(disk)
    s.flushes++
    s.flushLatency.observeSince(startMs)
  }

  failed (disk: string, op: 'read' | 'write' | 'flush'): void {
    const s = this.series(disk)
    if (op === 'read') s.readErrors++
    else if (op === 'write') s.writeErrors++
    else s.flushErrors++
  }

  // --- the agent's hooks ----------------------------------------------------------------------

  replicaStale (disk: string): void { this.series(disk).staleMarks++ }
  leaseAcquired (disk: string): void { this.series(disk).leaseAcquisitions++ }
  leaseHandedOver (disk: string): void { this.series(disk).leaseHandovers++ }
  leaseLost (disk: string): void { this.series(disk).leaseLosses++ }


  private series (disk: string): DiskSeries {
    let s = this.disks.get(disk)
    if (s === undefined) { s = new DiskSeries(); this.disks.set(disk, s) }
    return s
  }

  // The series of disks that still exist (a deleted disk's go at the next scrape), plus one per
  // disk the engines counted bytes for.
  private current (): Map<string, DiskSeries> {
    if (this.sources === null) return this.disks
    const known = new Set(this.sources.disks())
    for (const name of this.disks.keys()) if (!known.has(name)) this.disks.delete(name)
    return this.disks
  }

  private readSources (which: 'shortCircuit' | 'remote'): Sample[] {
    const totals = this.sources?.ioTotals() ?? {}
    const out: Sample[] = []
    for (const [disk, c] of Object.entries(totals)) {
      const s = this.series(disk)
      const local = c.localReadBytes ?? 0
      s.shortCircuitReadBytes = Math.max(s.shortCircuitReadBytes, local)
      s.remoteReadBytes = Math.max(s.remoteReadBytes, c.readBytes - local)
      out.push({ labels: { disk }, value: which === 'shortCircuit' ? s.shortCircuitReadBytes : s.remoteReadBytes })
    }
    return out
  }

  private async relocationSamples (value: (s: RelocationSeries) => number): Promise<Sample[]> {
    await this.refreshRelocations()
    return perKey(this.relocations, 'disk', value)
  }

  // One refresh per scrape, shared by the four relocation metrics.
  private refreshing: Promise<void> | null = null
  private refreshedAtMs = 0
  private refreshRelocations (): Promise<void> {
    if (this.refreshing !== null) return this.refreshing
    if (performance.now() - this.refreshedAtMs < RELOCATION_READ_TIMEOUT_MS) return Promise.resolve()
    this.refreshing = this.readRelocations().finally(() => { this.refreshing = null; this.refreshedAtMs = performance.now() })
    return this.refreshing
  }

  private async readRelocations (): Promise<void> {
    const src = this.sources
    if (src === null) return
    const running = src.disks().filter(d => src.relocating(d))
    for (const name of this.relocations.keys()) if (!running.includes(name)) this.relocations.delete(name)
    await Promise.all(running.map(async (disk) => {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<undefined>(resolve => { timer = setTimeout(() => resolve(undefined), RELOCATION_READ_TIMEOUT_MS) })
      try {
        const p = await Promise.race([src.relocation(disk), timeout]).catch(() => undefined)
        if (p === undefined) return  // slow or failed: keep the last figures
        if (p === null) { this.relocations.delete(disk); return }
        const prev = this.relocations.get(disk)
        // The first figure seen: the average since the relocation was created.
        let rate = prev?.rateBytesPerSec ?? (p.updatedAtMs > p.createdAtMs ? p.progressBytes * 1000 / (p.updatedAtMs - p.createdAtMs) : 0)
        if (prev !== undefined && p.updatedAtMs > prev.updatedAtMs) rate = Math.max(0, (p.progressBytes - prev.progressBytes) * 1000 / (p.updatedAtMs - prev.updatedAtMs))
        this.relocations.set(disk, { ...p, rateBytesPerSec: rate })
      } finally {
        clearTimeout(timer)
      }
    }))
  }
}
