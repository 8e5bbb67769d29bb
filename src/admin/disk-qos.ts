// `ukai disk qos`: a disk's I/O limits, stored in its record (schema.ts DiskQos) and enforced by
// the disk engine of every agent that opens it (src/vdisk/virtual-disk.ts, its throttle), which
// picks a change up from the record's watch — no remount. A change merges into what is set:
// `--iops 200` keeps an MB/s cap already there; 0 lifts one limit, `clear` all of them. Every
// check runs before the one conditional write, so a refused change leaves the record as it was.
import { UkaiError } from '../errors'
import { formatRate } from '../units'
import { VersionedDiskRecord, updateDiskRecord } from '../meta/disk-record-update'
import { DiskQos, DiskRecord, QOS_BURST_SECONDS_MAX, QOS_BYTES_PER_SEC_MAX, QOS_IOPS_MAX, readDiskQos, validateDiskName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { throttleLimitsOf } from '../vdisk/disk-qos'

// A burst larger than an hour of the largest rate is a typo.
export const QOS_BURST_IOPS_MAX = QOS_IOPS_MAX * QOS_BURST_SECONDS_MAX
export const QOS_BURST_BYTES_MAX = QOS_BYTES_PER_SEC_MAX * QOS_BURST_SECONDS_MAX

// What a caller asks to change; absent fields stay as they are.
export interface QosChange {
  clear?: boolean
  iops?: number          // 0: unlimited
  bytesPerSec?: number   // 0: unlimited
  burstIops?: number
  burstBytes?: number
  burstSeconds?: number
}

function check (ok: boolean, flag: string, value: number, rule: string): void {
  if (!ok) throw UkaiError.badArgument(`bad ${flag} ${value}: ${rule}`)
}

// The record with the change applied (throws BAD_ARGUMENT, naming the flag, for a bad one).
export function withQosChange (rec: DiskRecord, change: QosChange): DiskRecord {
  const given = (['iops', 'bytesPerSec', 'burstIops', 'burstBytes', 'burstSeconds'] as const).filter(k => change[k] !== undefined)
  if (change.clear === true) {
    if (given.length > 0) throw UkaiError.badArgument('--clear lifts every limit: give it alone')
    const { qos, ...rest } = rec
    return rest
  }
  if (given.length === 0) throw UkaiError.badArgument('nothing to change: give --iops, --mbps, a burst or --clear')
  const { iops, bytesPerSec, burstIops, burstBytes, burstSeconds } = change
  if (iops !== undefined) check(Number.isSafeInteger(iops) && iops >= 0 && iops <= QOS_IOPS_MAX, '--iops', iops, `must be a whole number from 0 (unlimited) to ${QOS_IOPS_MAX}`)
  if (bytesPerSec !== undefined) check(Number.isFinite(bytesPerSec) && bytesPerSec >= 0 && bytesPerSec <= QOS_BYTES_PER_SEC_MAX, '--mbps', bytesPerSec / 1e6, `must be from 0 (unlimited) to ${QOS_BYTES_PER_SEC_MAX / 1e6} MB/s`)
  if (burstIops !== undefined) check(Number.isSafeInteger(burstIops) && burstIops >= 1 && burstIops <= QOS_BURST_IOPS_MAX, '--burst-iops', burstIops, `must be a whole number from 1 to ${QOS_BURST_IOPS_MAX}`)
  if (burstBytes !== undefined) check(Number.isFinite(burstBytes) && burstBytes >= 1 && burstBytes <= QOS_BURST_BYTES_MAX, '--burst-mb', burstBytes / 1e6, `must be more than 0 and at most ${QOS_BURST_BYTES_MAX / 1e6} MB`)
  if (burstSeconds !== undefined) check(Number.isFinite(burstSeconds) && burstSeconds > 0 && burstSeconds <= QOS_BURST_SECONDS_MAX, '--burst', burstSeconds, `must be more than 0 and at most ${QOS_BURST_SECONDS_MAX} seconds`)
  if (burstSeconds !== undefined && (burstIops !== undefined || burstBytes !== undefined)) {
    throw UkaiError.badArgument('give either --burst SECONDS or --burst-iops/--burst-mb, not both')
  }
  const cur: DiskQos = readDiskQos(rec) ?? { v: 1, iops: 0, bytesPerSec: 0 }
  const next: DiskQos = { ...cur, ...definedOnly(change), v: 1 }
  delete (next as { clear?: boolean }).clear
  if (burstSeconds !== undefined) { delete next.burstIops; delete next.burstBytes }
  if (burstIops !== undefined || burstBytes !== undefined) delete next.burstSeconds
  if (next.iops === 0) {
    if (burstIops !== undefined) throw UkaiError.badArgument(`--burst-iops needs an IOPS limit: disk '${rec.name}' has none (give --iops)`)
    delete next.burstIops
  }
  if (next.bytesPerSec === 0) {
    if (burstBytes !== undefined) throw UkaiError.badArgument(`--burst-mb needs an MB/s limit: disk '${rec.name}' has none (give --mbps)`)
    delete next.burstBytes
  }
  if (next.iops === 0 && next.bytesPerSec === 0) {
    const { qos, ...rest } = rec
    return rest
  }
  return { ...rec, qos: next }
}

function definedOnly (change: QosChange): Partial<DiskQos> {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(change)) if (typeof v === 'number') out[k] = v
  return out
}

export async function setDiskQos (meta: MetaStore, name: string, change: QosChange): Promise<VersionedDiskRecord> {
  validateDiskName(name)
  return await updateDiskRecord(meta, name, rec => withQosChange(rec, change))
}

// "200 IOPS (burst 200), 5.00 MB/s (burst 5.00 MB)", or "unlimited"; what `disk info`, `disk
// qos` and `ukai top` print.
export function formatQos (q: DiskQos | null | undefined): string {
  if (q == null || (q.iops === 0 && q.bytesPerSec === 0)) return 'unlimited'
  if (q.v !== 1) return `not understood (format version ${String(q.v)}): agents keep the limits they had`
  const l = throttleLimitsOf(q)
  const parts: string[] = []
  if (l.opsPerSec > 0) parts.push(`${l.opsPerSec} IOPS (burst ${l.burstOps})`)
  if (l.bytesPerSec > 0) parts.push(`${formatRate(l.bytesPerSec)} (burst ${(l.burstBytes / 1e6).toFixed(2)} MB)`)
  return parts.join(', ')
}

// Short form for a table cell: "200/5.0M" style is cryptic, so "200 IOPS", "5.00 MB/s", or "-".
export function formatQosShort (q: DiskQos | null | undefined): string {
  if (q == null) return '-'
  if (q.v !== 1) return '?'
  const parts: string[] = []
  if (q.iops > 0) parts.push(`${q.iops} IOPS`)
  if (q.bytesPerSec > 0) parts.push(formatRate(q.bytesPerSec))
  return parts.join(' ') || '-'
}
