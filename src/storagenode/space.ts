// Space accounting: the node's allocated bytes against its quota (`capacityBytes`), and NO_SPACE
// before a byte is written rather than ENOSPC half-way.
//
// Allocation per file (st_blocks * 512) is scanned once at open and kept in memory, so the data
// path does no stat. Writes are accounted without an fstat: each adds its worst case (every page
// it touched, pagesSpanBytes) per file, until reconcile() replaces the estimate with st_blocks
// (RECONCILE_DELAY_MS after the first unsettled write, or when the quota check would refuse).
// The quota check reconciles before refusing, so the estimate only ever errs on the safe side.
// Operations in progress hold a reservation of their worst case until they end.
import * as fsp from 'node:fs/promises'
import { UkaiError } from '../errors'
import { PAGE_BYTES } from './version-files'

const RECONCILE_DELAY_MS = 200

export interface SpaceStat { capacityBytes: number, usedBytes: number, freeBytes: number }

export class SpaceAccount {
  private readonly allocBytes = new Map<string, number>()  // file path → st_blocks*512
  private usedBytesTotal = 0
  private reservedBytes = 0   // worst-case allocation of writes in progress
  private readonly unsettledBytes = new Map<string, number>()
  private unsettledTotal = 0
  private reconciling: Promise<void> | undefined
  private reconcileTimer: NodeJS.Timeout | undefined
  private stopped = false

  constructor (private readonly nodeId: string, readonly capacityBytes: number | undefined) {}

  // Allocated bytes; recent writes count at their worst case until the next reconcile.
  get usedBytes (): number { return this.usedBytesTotal + this.unsettledTotal }
  // How many files are accounted (every version file after the start-up scan).
  get fileCount (): number { return this.allocBytes.size }

  // What a copy of `file` may allocate: its allocation plus what recent writes may have added.
  costOfCopy (file: string): number {
    return (this.allocBytes.get(file) ?? 0) + (this.unsettledBytes.get(file) ?? 0)
  }

  allocatedOf (file: string): number { return this.allocBytes.get(file) ?? 0 }

  // Claims `bytes` of quota for an operation in progress, or throws NO_SPACE.
  async reserve (bytes: number): Promise<void> {
    const fits = (): boolean => this.capacityBytes === undefined ||
      this.usedBytesTotal + this.unsettledTotal + this.reservedBytes + bytes <= this.capacityBytes
    if (!fits() && this.unsettledTotal > 0) await this.reconcile()
    if (!fits()) {
      throw UkaiError.noSpace(`storage node ${this.nodeId} is full: ${bytes} more bytes would exceed its capacity of ${this.capacityBytes} bytes (${this.usedBytesTotal} used)`)
    }
    this.reservedBytes += bytes
  }

  // Gives back what reserve() claimed, once the operation ended (its allocation is accounted).
  release (bytes: number): void { this.reservedBytes -= bytes }

  addUnsettled (file: string, bytes: number): void {
    this.unsettledBytes.set(file, (this.unsettledBytes.get(file) ?? 0) + bytes)
    this.unsettledTotal += bytes
    if (this.reconcileTimer === undefined && !this.stopped) {
      this.reconcileTimer = setTimeout(() => {
        this.reconcileTimer = undefined
        this.reconcile().catch(() => {})
      }, RECONCILE_DELAY_MS)
      this.reconcileTimer.unref()
    }
  }

  // Replaces the worst-case estimates of written files by their real allocation (st_blocks).
  async reconcile (): Promise<void> {
    while (this.reconciling !== undefined) await this.reconciling
    if (this.unsettledBytes.size === 0) return
    const batch = [...this.unsettledBytes]
    this.unsettledBytes.clear()
    this.reconciling = (async () => {
      for (const [file, estimate] of batch) {
        try {
          // Only files still known: a deleted version was already dropped from allocBytes.
          if (this.allocBytes.has(file)) this.setAlloc(file, (await fsp.stat(file)).blocks * 512)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
            this.unsettledBytes.set(file, (this.unsettledBytes.get(file) ?? 0) + estimate)
            continue
          }
        }
        this.unsettledTotal -= estimate
      }
    })()
    try { await this.reconciling } finally { this.reconciling = undefined }
  }

  setAlloc (file: string, bytes: number): void {
    this.usedBytesTotal += bytes - (this.allocBytes.get(file) ?? 0)
    this.allocBytes.set(file, bytes)
  }

  forgetAlloc (file: string): void {
    this.usedBytesTotal -= this.allocBytes.get(file) ?? 0
    this.allocBytes.delete(file)
    const unsettled = this.unsettledBytes.get(file)
    if (unsettled !== undefined) { this.unsettledTotal -= unsettled; this.unsettledBytes.delete(file) }
  }

  // Forgets every file under `dir` (a deleted disk); answers the bytes they held.
  forgetUnder (dir: string): number {
    let freed = 0
    for (const [p, n] of this.allocBytes) {
      if (p.startsWith(dir + '/')) { freed += n; this.forgetAlloc(p) }
    }
    return freed
  }

  // Capacity, use and room left: the quota where there is one, never more than the filesystem has.
  async stat (dataDir: string): Promise<SpaceStat> {
    await this.reconcile()
    const fsStat = await fsp.statfs(dataDir)
    const fsFreeBytes = fsStat.bavail * fsStat.bsize
    const fsTotalBytes = fsStat.blocks * fsStat.bsize
    const capacityBytes = this.capacityBytes ?? fsTotalBytes
    const quotaLeft = this.capacityBytes === undefined ? fsFreeBytes : Math.max(0, this.capacityBytes - this.usedBytes)
    return { capacityBytes, usedBytes: this.usedBytes, freeBytes: Math.min(quotaLeft, fsFreeBytes) }
  }

  // No reconcile is scheduled after this (the store is closing).
  stop (): void {
    this.stopped = true
    if (this.reconcileTimer !== undefined) clearTimeout(this.reconcileTimer)
  }
}

// Upper bound of what a write can newly allocate: every page it touches.
export function pagesSpanBytes (offset: number, length: number): number {
  const first = Math.floor(offset / PAGE_BYTES)
  const last = Math.floor((offset + length - 1) / PAGE_BYTES)
  return (last - first + 1) * PAGE_BYTES
}
