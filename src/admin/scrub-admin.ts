// `ukai scrub DISK|--all [--deep]`: every node holding in-sync replicas of the disk checks its
// stored versions against their checksums (the Scrub RPC, storagenode/scrub.ts); with --deep the
// replicas' per-version digests are compared too (same bytes ⇔ same digest). A replica found
// bad is marked stale in the placement map — the node itself has no map — so the repair (the
// lease holder's automatic one, or `ukai disk repair`) copies the block again; but never the
// last replica that may be good: a block whose every replica is bad is reported, not marked.
// With --deep, replicas whose versions differ from a strict majority are marked stale; a tie
// (two replicas that disagree, both passing their checksums) is reported as diverged, since
// nothing says which one is right. A deep scrub of a disk being written may see a write that
// reached one replica and not yet the other: such a block shows as diverged or is repaired
// needlessly, never wrongly dropped. The counts go to the disk's scrub record (disk info, top).
import { UkaiError } from '../errors'
import { Logger, silentLogger } from '../log'
import { DiskMap } from '../meta/disk-map'
import { DiskRecord, ScrubRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { ScrubResponse, StorageClient } from '../storagenode/client'

export interface ScrubDiskReport {
  disk: string
  deep: boolean
  nodes: string[]                 // nodes that checked their replicas
  unreachable: string[]           // nodes holding in-sync replicas that could not be asked
  versionsChecked: number
  bytesChecked: number
  adopted: number                 // versions older than checksums that got them
  mismatches: number              // (node, block) pairs found bad: checksum or, with --deep, digest
  markedStale: number             // of those, replicas marked stale (repair copies them again)
  unrepairable: number[]          // blocks with no replica known good
  diverged: number[]              // --deep: blocks whose replicas disagree with no majority
}

export async function scrubDisk (meta: MetaStore, name: string, opts: { deep: boolean, logger?: Logger }): Promise<ScrubDiskReport> {
  const log = opts.logger ?? silentLogger
  const disk = await meta.getDisk(name)
  const inSync = await inSyncHolders(meta, disk)
  const views = await meta.listNodes()
  const holders = [...new Set([...inSync.values()].flat())].sort()
  const report: ScrubDiskReport = { disk: name, deep: opts.deep, nodes: [], unreachable: [], versionsChecked: 0, bytesChecked: 0, adopted: 0, mismatches: 0, markedStale: 0, unrepairable: [], diverged: [] }
  const answers = new Map<string, ScrubResponse>()
  await Promise.all(holders.map(async (id) => {
    const address = views.find(v => v.id === id)?.alive?.address
    if (address === undefined) { report.unreachable.push(id); return }
    const client = new StorageClient({ nodeId: id, address })
    try {
      answers.set(id, await client.scrub({ diskUuid: disk.uuid, digests: opts.deep }))
    } catch (err) {
      report.unreachable.push(id)
      log.warn({ node: id, disk: name, err: (err as Error).message }, 'scrub: node could not check its replicas')
    } finally {
      await client.close()
    }
  }))
  if (holders.length > 0 && answers.size === 0) {
    throw UkaiError.unavailable(`scrub of disk '${name}': no node holding it could be asked (${report.unreachable.sort().join(', ')})`)
  }
  report.nodes = [...answers.keys()].sort()
  report.unreachable.sort()
  const bad = new Map<number, Set<string>>()  // block → nodes whose replica is bad
  const addBad = (block: number, node: string): void => {
    if (!(inSync.get(block)?.includes(node) ?? false)) return  // not in sync there: nothing to mark
    let s = bad.get(block)
    if (s === undefined) { s = new Set(); bad.set(block, s) }
    if (!s.has(node)) { s.add(node); report.mismatches++ }
  }
  for (const [node, a] of answers) {
    report.versionsChecked += a.versionsChecked
    report.bytesChecked += a.bytesChecked
    report.adopted += a.adopted
    for (const f of a.bad) addBad(f.block, node)
  }
  if (opts.deep) compareDigests(inSync, answers, bad, addBad, report)
  const staleByNode = new Map<string, number[]>()
  for (const [block, nodes] of bad) {
    const good = (inSync.get(block) ?? []).filter(n => !nodes.has(n) && answers.has(n))
    if (good.length === 0) { report.unrepairable.push(block); continue }  // keep them all: nothing better exists
    for (const n of nodes) staleByNode.set(n, [...(staleByNode.get(n) ?? []), block])
  }
  if (staleByNode.size > 0) {
    const map = await DiskMap.open(meta, disk, { logger: log })
    try {
      for (const [node, blocks] of staleByNode) {
        await map.markStale(node, blocks)
        report.markedStale += blocks.length
        log.warn({ disk: name, node, blocks }, 'scrub: replicas found bad, marked stale for repair')
      }
    } finally {
      await map.close()
    }
  }
  report.unrepairable.sort((a, b) => a - b)
  report.diverged.sort((a, b) => a - b)
  await recordScrub(meta, name, report)
  return report
}

// --deep: per block, the versions and digests of every replica that passed its own check; the
// replicas that differ from a strict majority are bad; with no majority the block diverged.
function compareDigests (inSync: Map<number, string[]>, answers: Map<string, ScrubResponse>, bad: Map<number, Set<string>>, addBad: (block: number, node: string) => void, report: ScrubDiskReport): void {
  const sig = new Map<string, Map<number, string[]>>()  // node → block → 'epoch:digest' list
  for (const [node, a] of answers) {
    const m = new Map<number, string[]>()
    for (const d of a.digests) m.set(d.block, [...(m.get(d.block) ?? []), `${d.epoch}:${d.digest}`])
    sig.set(node, m)
  }
  for (const [block, nodes] of inSync) {
    const judged = nodes.filter(n => answers.has(n) && !(bad.get(block)?.has(n) ?? false))
    if (judged.length < 2) continue
    const votes = new Map<string, string[]>()
    for (const n of judged) {
      const s = (sig.get(n)?.get(block) ?? []).sort().join(',')
      votes.set(s, [...(votes.get(s) ?? []), n])
    }
    if (votes.size === 1) continue
    const [winner, voters] = [...votes].sort((a, b) => b[1].length - a[1].length)[0]
    if (voters.length * 2 <= judged.length) { report.diverged.push(block); continue }
    for (const [s, ns] of votes) if (s !== winner) for (const n of ns) addBad(block, n)
  }
}

// Block → the nodes holding an in-sync replica of it (blocks with none are left out).
async function inSyncHolders (meta: MetaStore, disk: DiskRecord): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>()
  for (const seg of await meta.loadPlacement(disk)) {
    let block = seg.firstBlock
    for (const run of seg.runs()) {
      const nodes = run.replicas.filter(r => r.state === 'in-sync').map(r => r.node)
      if (nodes.length > 0) for (let b = block; b < block + run.length; b++) out.set(b, nodes)
      block += run.length
    }
  }
  return out
}

// The disk's scrub record: the last run's counts and the totals since the disk was created.
async function recordScrub (meta: MetaStore, name: string, r: ScrubDiskReport): Promise<void> {
  const old = await meta.getScrubRecord(name)
  const rec: ScrubRecord = {
    v: 1,
    lastScrubMs: Date.now(),
    deep: r.deep,
    versionsChecked: r.versionsChecked,
    bytesChecked: r.bytesChecked,
    mismatches: r.mismatches,
    markedStale: r.markedStale,
    unrepairable: r.unrepairable.length,
    diverged: r.diverged.length,
    runs: (old?.runs ?? 0) + 1,
    mismatchesTotal: (old?.mismatchesTotal ?? 0) + r.mismatches,
    markedStaleTotal: (old?.markedStaleTotal ?? 0) + r.markedStale
  }
  await meta.putScrubRecord(name, rec)
}
