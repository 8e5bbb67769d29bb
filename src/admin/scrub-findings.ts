// The nodes' background scrub findings, acted on: a node's scrub (storagenode/scrub.ts) finds a
// version that no longer matches its checksum, but the node has no placement map and marks
// nothing. Here every live node is asked for what its background passes found (the Scrub RPC
// with no disk named); each disk with a finding not acted on yet is scrubbed now
// (scrub-admin.ts scrubDisk: the nodes check that disk again, the bad replicas are marked stale —
// never the last one that may be good), and the repair copies them again. The controller's
// scrub-findings duty calls this periodically (controller/scrub-findings.ts), so a flipped byte
// nobody reads is repaired without an operator.
import { isUkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { MetaStore } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import type { ScrubFinding } from '../storagenode/wire'
import { ScrubDiskReport, scrubDisk } from './scrub-admin'

export interface ScrubFindingsPass {
  asked: string[]                 // nodes that answered
  unreachable: string[]
  findings: number                // findings the nodes reported (acted on before or not)
  reports: ScrubDiskReport[]      // one per disk scrubbed because of a new finding
}

// `seen`: finding key → its foundAtMs, kept by the caller between passes, so that a finding is
// acted on once (a node keeps reporting it until its next pass finds the version good or gone).
// `unreachable` (kept by the caller too): nodes already logged as not answering, so that a node
// down for an hour is one log line, not one a pass.
export async function actOnScrubFindings (meta: MetaStore, seen: Map<string, number>, opts: { logger?: Logger, unreachable?: Set<string> } = {}): Promise<ScrubFindingsPass> {
  const log = opts.logger ?? silentLogger
  const out: ScrubFindingsPass = { asked: [], unreachable: [], findings: 0, reports: [] }
  const fresh = new Map<string, number>()
  const uuids = new Set<string>()
  for (const n of await meta.listNodes()) {
    const address = n.alive?.address
    if (address === undefined) continue
    const client = new StorageClient({ nodeId: n.id, address })
    let bad: ScrubFinding[]
    try {
      bad = (await client.scrub({ diskUuid: '', digests: false })).bad
      out.asked.push(n.id)
      opts.unreachable?.delete(n.id)
    } catch (err) {
      out.unreachable.push(n.id)
      if (opts.unreachable?.has(n.id) !== true) log.warn({ node: n.id, err: (err as Error).message }, 'scrub findings: node could not be asked (logged once until it answers)')
      opts.unreachable?.add(n.id)
      continue
    } finally {
      await client.close()
    }
    for (const f of bad) {
      const key = `${n.id}/${f.diskUuid}/${f.block}.${f.epoch}`
      out.findings++
      fresh.set(key, f.foundAtMs)
      if (seen.get(key) !== f.foundAtMs) uuids.add(f.diskUuid)
    }
  }
  // Forget what the nodes no longer report (found good again, or gone).
  for (const key of [...seen.keys()]) if (!fresh.has(key)) seen.delete(key)
  if (uuids.size === 0) return out
  const failed = new Set<string>()
  for (const disk of await meta.listDisks()) {
    if (!uuids.has(disk.uuid)) continue
    let report: ScrubDiskReport
    try {
      report = await scrubDisk(meta, disk.name, { deep: false, logger: log })
    } catch (err) {
      if (!isUkaiError(err)) throw err
      failed.add(disk.uuid)  // deleted meanwhile, nobody to ask: the next pass tries again
      log.warn({ disk: disk.name, err: err.message }, 'scrub findings: the disk could not be scrubbed; trying again next pass')
      continue
    }
    out.reports.push(report)
    log.warn({ disk: disk.name, mismatches: report.mismatches, markedStale: report.markedStale, unrepairable: report.unrepairable }, 'background scrub found bad replicas: the disk was scrubbed and they are marked stale for repair')
  }
  // Acted on (or their disk is gone): not again until a node finds them anew.
  for (const [key, at] of fresh) if (!failed.has(key.split('/')[1])) seen.set(key, at)
  return out
}
