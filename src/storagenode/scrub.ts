// Scrub: re-checks stored versions against their checksums (page-checksums.ts), so rot in a
// block nobody reads is found before the last good copy is needed.
//
// - In the background, every node walks all its versions once per `intervalMs`, one version at a
//   time, sleeping between versions to stay under `bytesPerSecMax` (`ukai storagenode
//   --scrub-mbps`, `--scrub-interval-ms`; 0 MB/s: off). A version older than checksums gets its
//   sidecar here (adopted: from then on it is verified like the rest).
// - On request (the Scrub RPC, `ukai scrub DISK`): one disk's versions now, at full speed, with a
//   digest per version (`--deep` compares them across replicas).
// The node has no placement map (only src/meta talks to ZooKeeper, and a node's record is all it
// writes there), so it does not mark anything stale itself: what it finds is answered by the
// Scrub RPC (the disk's own findings, or with no disk named the background pass's), and the CLI
// marks the replicas stale (docs/architecture.md, "Checksums and scrub"). A rotten block that a
// VM reads is marked stale by its agent at once, whatever the scrub does.
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { sleep } from '../lib/timers'
import type { BlockStore } from './block-store'
import { CHECKSUM_PAGE_BYTES } from './page-checksums'
import type { ScrubFinding, ScrubResponse } from './wire'

export const SCRUB_MBPS_DEFAULT = 8           // MB/s of reading the background pass may use
export const SCRUB_INTERVAL_MS_DEFAULT = 24 * 3600 * 1000  // a pass a day
const START_DELAY_MS = 30_000                 // the first pass waits for the node's start-up I/O
const FINDINGS_MAX = 1000                     // bad versions remembered (oldest dropped)

export type ScrubResult = ScrubResponse

export interface ScrubberOptions {
  store: Pick<BlockStore, 'listBlocks' | 'checkVersion' | 'diskUuids'>
  bytesPerSecMax?: number
  intervalMs?: number
  logger?: Logger
}

export class Scrubber {
  private readonly store: ScrubberOptions['store']
  private readonly bytesPerSecMax: number
  private readonly intervalMs: number
  private readonly log: Logger
  private readonly findings = new Map<string, ScrubFinding>()  // '<uuid>/<block>.<epoch>'
  private readonly stopped = new AbortController()
  private loop: Promise<void> | null = null
  private passes = 0
  private lastPassEndMs = 0
  private totals = { versionsChecked: 0, bytesChecked: 0, adopted: 0 }

  constructor (opts: ScrubberOptions) {
    this.store = opts.store
    this.bytesPerSecMax = opts.bytesPerSecMax ?? SCRUB_MBPS_DEFAULT * 1e6
    this.intervalMs = opts.intervalMs ?? SCRUB_INTERVAL_MS_DEFAULT
    this.log = opts.logger ?? silentLogger
  }

  start (startDelayMs = Math.min(START_DELAY_MS, this.intervalMs)): void {
    if (this.loop !== null || this.bytesPerSecMax <= 0) return
    this.loop = this.run(startDelayMs).catch(err => {
      if (!this.stopped.signal.aborted) { safetyCatch(err); this.log.error({ err: (err as Error).message }, 'background scrub stopped') }
    })
  }

  async close (): Promise<void> {
    this.stopped.abort()
    await this.loop
  }

  // What the background passes found (no disk named), or one disk checked now.
  async scrub (diskUuid: string, digests: boolean): Promise<ScrubResult> {
    if (diskUuid === '') {
      return { ...this.totals, bad: [...this.findings.values()], digests: [], passes: this.passes, lastPassEndMs: this.lastPassEndMs }
    }
    const out: ScrubResult = { versionsChecked: 0, bytesChecked: 0, adopted: 0, bad: [], digests: [], passes: this.passes, lastPassEndMs: this.lastPassEndMs }
    for (const { block, epochs } of this.store.listBlocks(diskUuid)) {
      for (const epoch of epochs) {
        const got = await this.checkOne(diskUuid, block, epoch, out)
        if (got !== null && digests) out.digests.push({ block, epoch, digest: got.digest })
      }
    }
    return out
  }

  private async checkOne (diskUuid: string, block: number, epoch: number, out: Pick<ScrubResult, 'versionsChecked' | 'bytesChecked' | 'adopted' | 'bad'>): Promise<{ digest: number, sizeBytes: number } | null> {
    const key = `${diskUuid}/${block}.${epoch}`
    const got = await this.store.checkVersion(diskUuid, block, epoch)
    if (got === null) { this.findings.delete(key); return null }
    out.versionsChecked++
    out.bytesChecked += got.sizeBytes
    if (got.adopted) out.adopted++
    if (got.badPage < 0) {
      this.findings.delete(key)
      return got
    }
    const finding = { diskUuid, block, epoch, page: got.badPage, foundAtMs: Date.now() }
    out.bad.push(finding)
    this.findings.delete(key)
    this.findings.set(key, finding)
    if (this.findings.size > FINDINGS_MAX) this.findings.delete(this.findings.keys().next().value as string)
    this.log.error({ disk: diskUuid, block, epoch, offset: got.badPage * CHECKSUM_PAGE_BYTES }, 'scrub: a stored block does not match its checksum')
    return got
  }

  private async run (startDelayMs: number): Promise<void> {
    const signal = this.stopped.signal
    await sleep(startDelayMs, { signal })
    for (;;) {
      const passStartMs = Date.now()
      const pass = { versionsChecked: 0, bytesChecked: 0, adopted: 0, bad: [] as ScrubFinding[] }
      for (const uuid of this.store.diskUuids()) {
        for (const { block, epochs } of this.store.listBlocks(uuid)) {
          for (const epoch of epochs) {
            const t0 = Date.now()
            const before = pass.bytesChecked
            try {
              await this.checkOne(uuid, block, epoch, pass)
            } catch (err) {
              safetyCatch(err)  // removed meanwhile, a failing disk: the next pass tries again
              this.log.warn({ disk: uuid, block, epoch, err: (err as Error).message }, 'scrub: could not check a version')
            }
            // The rate limit: this version's bytes may take no less than bytes / rate.
            const owedMs = (pass.bytesChecked - before) / this.bytesPerSecMax * 1000 - (Date.now() - t0)
            if (owedMs > 0) await sleep(owedMs, { signal })
            if (signal.aborted) return
          }
        }
      }
      this.passes++
      this.lastPassEndMs = Date.now()
      this.totals.versionsChecked += pass.versionsChecked
      this.totals.bytesChecked += pass.bytesChecked
      this.totals.adopted += pass.adopted
      this.log.info({ versions: pass.versionsChecked, bytes: pass.bytesChecked, adopted: pass.adopted, bad: pass.bad.length, ms: this.lastPassEndMs - passStartMs }, 'scrub pass done')
      await sleep(Math.max(0, passStartMs + this.intervalMs - Date.now()), { signal })
    }
  }
}
