// Live migration support, for the libvirt hook and for orchestrators that call the CLI:
//
// prepare (destination side, before or while the VM moves): start relocating each disk toward the
//   destination's site. The relocation record is executed by whoever holds the disk's lease —
//   the source agent while the VM still runs there, the destination agent once the destination's
//   first write moved the lease — so the copy runs in the background and survives the switch.
//
// finish (source side, after the VM left): make sure this host no longer holds the lease (the
//   agent releases it when QEMU closes the file; if it still holds it — the destination has not
//   written yet — it is asked to hand over, which it does after flushing) and report where the
//   relocation is. The far replicas are dropped by the relocation itself, when every block is in
//   sync at the destination (the flip); finish never drops data on its own.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import { readLease, releaseOnlyRequester, requestHandover, withdrawHandover } from '../meta/lease'
import { RelocationRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { planRelocation } from './plan'
import { isActive, startRelocation } from './start'

export type PrepareAction = 'started' | 'already-there' | 'already-relocating'

export interface PrepareOutcome {
  disk: string
  site: string
  action: PrepareAction
  targetNodes: string[]
  bytes: number            // planned copy, 0 unless started
  executor: string         // the lease holder that runs it now ('' when nobody holds the lease)
}

// The site of a hypervisor, from its agent's registration.
export async function siteOfHost (meta: MetaStore, host: string): Promise<string> {
  const agent = (await meta.listAgents()).find(a => a.host === host)
  if (agent === undefined) throw UkaiError.notFound(`unknown hypervisor '${host}': no agent registered under that name (see 'ukai site list')`)
  return agent.site
}

// Starts moving one disk to SITE unless it is there already or on its way.
export async function prepareDiskToward (meta: MetaStore, disk: string, site: string, opts: { rateBytesPerSec?: number } = {}): Promise<PrepareOutcome> {
  const lease = await readLease(meta, disk)
  const executor = lease.holder?.host ?? ''
  const existing = await meta.getRelocation(disk)
  if (existing !== null && isActive(existing)) {
    const nodes = await meta.listNodes()
    const toSite = existing.targetNodes.every(id => nodes.find(n => n.id === id)?.site === site)
    if (toSite && existing.state !== 'cancelled') return { disk, site, action: 'already-relocating', targetNodes: existing.targetNodes, bytes: 0, executor: existing.executor || executor }
    throw UkaiError.busy(`disk '${disk}' is being relocated to ${existing.targetNodes.join(',')} (${existing.state}), not to site ${site}; wait for it or cancel it ('ukai relocate cancel ${disk}')`)
  }
  try {
    // No link probe: a migration hook must return within seconds, and nobody reads this estimate.
    const plan = await planRelocation(meta, { disk, site, probeBudgetMs: 0 })
    await startRelocation(meta, plan, opts.rateBytesPerSec ?? 0, { placement: { site } })
    return { disk, site, action: 'started', targetNodes: plan.targetNodes, bytes: plan.bytes, executor }
  } catch (err) {
    if (isUkaiError(err, 'ALREADY_EXISTS')) return { disk, site, action: 'already-there', targetNodes: [], bytes: 0, executor }
    throw err
  }
}

export type LeaseAfterFinish = 'free' | 'released' | 'moved' | 'still-open-here' | 'still-held'

export interface FinishOutcome {
  disk: string
  lease: LeaseAfterFinish
  leaseHolder: string             // '' when free
  relocation: Pick<RelocationRecord, 'state' | 'targetNodes' | 'reason'> & { percent: number } | null
}

const LEASE_POLL_MS = 50

// The source side's part: see the file comment. `host` is this hypervisor's agent name.
export async function finishDiskMigration (meta: MetaStore, disk: string, host: string, opts: { releaseTimeoutMs: number }): Promise<FinishOutcome> {
  let lease: LeaseAfterFinish
  const opens = await meta.listOpens(disk)
  let info = await readLease(meta, disk)
  if (opens.includes(host)) {
    // QEMU (or something else) still has the file open here: the lease stays where it is.
    lease = 'still-open-here'
  } else if (info.holder === null) {
    lease = 'free'
  } else if (info.holder.host !== host) {
    lease = 'moved'
  } else {
    lease = await askToRelease(meta, disk, host, opts.releaseTimeoutMs) ? 'released' : 'still-held'
    info = await readLease(meta, disk)
  }
  const r = await meta.getRelocation(disk)
  const percent = r === null ? 0 : r.state === 'done' ? 100 : r.plan.bytes > 0 ? Math.min(100, Math.floor(r.progress.bytes * 100 / r.plan.bytes)) : 0
  return {
    disk,
    lease,
    leaseHolder: info.holder?.host ?? '',
    relocation: r === null ? null : { state: r.state, targetNodes: r.targetNodes, reason: r.reason, percent }
  }
}

// Leaves a hand-over request for the holder (this host's agent); it flushes and releases. We do
// not take the lease: whoever writes next (the destination) does.
async function askToRelease (meta: MetaStore, disk: string, host: string, timeoutMs: number): Promise<boolean> {
  // False: someone else asked already; wait with them.
  const ours = await requestHandover(meta, disk, releaseOnlyRequester(host))
  try {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const cur = await readLease(meta, disk)
      if (cur.holder === null || cur.holder.host !== host) return true
      if (Date.now() >= deadline) return false
      await new Promise(resolve => setTimeout(resolve, LEASE_POLL_MS))
    }
  } finally {
    if (ours) await withdrawHandover(meta, disk).catch(safetyCatch)
  }
}
