// ukai relocate DISK --to SITE | --nodes a,b  ·  relocate status [DISK]  ·  relocate cancel DISK
import cliProgress from 'cli-progress'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { readLease } from '../meta/lease'
import { RelocationRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { CopyEstimate, formatDuration } from '../relocate/copy-estimate'
import { planRelocation } from '../relocate/plan'
import { planRepair } from '../relocate/repair'
import { runRelocationHere } from '../relocate/run-here'
import { startRelocation } from '../relocate/start'
import { formatBytes, formatRate, plural } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'
import { idOption, nodeListOption, rateOption, replicasOption } from './parse'
import { sleep } from '../lib/timers'

const POLL_MS = 500
// An active relocation whose lease nobody holds for this long gets run by a waiting CLI.
const ORPHAN_AFTER_MS = 2000

function rateOf (r: RelocationRecord): number {
  const secs = ((r.progress.updatedAtMs || Date.now()) - r.createdAtMs) / 1000
  return secs > 0 ? r.progress.bytes / secs : 0
}

// "~2 min 10 s (measured 45.0 MiB/s node to node)": what the plan's ESTIMATE column says.
function describeEstimate (e: CopyEstimate): string {
  if (e.seconds === null) return 'unknown (link not measured; pass --rate)'
  if (e.basis === 'nothing to copy') return '0 s'
  const rate = e.basis === 'measured' ? `measured ${formatRate(e.measuredBytesPerSec)} node to node`
    : e.basis === 'rate cap' ? `at the ${formatRate(e.rateCapBytesPerSec)} cap`
      : `at the ${formatRate(e.rateCapBytesPerSec)} cap; link measured ${formatRate(e.measuredBytesPerSec)}`
  return `~${formatDuration(e.seconds)} (${rate})`
}

export function describe (r: RelocationRecord): { percent: number, rateBytesPerSec: number, etaSec: number | null } {
  const percent = r.state === 'done' ? 100 : r.plan.bytes > 0 ? Math.min(100, Math.floor(r.progress.bytes * 100 / r.plan.bytes)) : 0
  const rate = rateOf(r)
  const etaSec = rate > 0 ? Math.max(0, (r.plan.bytes - r.progress.bytes) / rate) : null
  return { percent, rateBytesPerSec: rate, etaSec }
}

export async function follow (meta: MetaStore, name: string, showBar: boolean): Promise<RelocationRecord> {
  const bar = showBar ? new cliProgress.SingleBar({ format: ' {bar} {percentage}% | {copied} of {planned} | {rate} | ETA {eta} | {state}', noTTYOutput: true, notTTYSchedule: 2000 }, cliProgress.Presets.shades_classic) : null
  let started = false
  let orphanSinceMs = 0
  try {
    for (;;) {
      const rec = await meta.getRelocation(name)
      if (rec === null) throw UkaiError.notFound(`disk '${name}' has no relocation`)
      const d = describe(rec)
      if (bar !== null) {
        // Our own ETA (from the record's rate): cli-progress's prints "NFs" before the first byte.
        const eta = rec.state === 'done' ? '0 s' : d.etaSec === null ? '-' : formatDuration(d.etaSec)
        const payload = { copied: formatBytes(rec.progress.bytes), planned: formatBytes(rec.plan.bytes), rate: formatRate(d.rateBytesPerSec), eta, state: rec.state }
        if (!started) { bar.start(Math.max(1, rec.plan.bytes), rec.progress.bytes, payload); started = true }
        bar.update(rec.state === 'done' ? Math.max(1, rec.plan.bytes) : rec.progress.bytes, payload)
      }
      if (rec.state === 'done' || rec.state === 'paused' || (rec.state === 'cancelled' && rec.finishedAtMs !== 0)) return rec
      // Nobody holds the lease (the executor crashed, or the VM closed the disk): run it here.
      const lease = await readLease(meta, name)
      if (lease.holder === null) {
        orphanSinceMs ||= Date.now()
        if (Date.now() - orphanSinceMs >= ORPHAN_AFTER_MS || rec.executor === '') {
          await runRelocationHere(meta, name)
          orphanSinceMs = 0
          continue
        }
      } else {
        orphanSinceMs = 0
      }
      await sleep(POLL_MS)
    }
  } finally {
    bar?.stop()
  }
}

export function relocateCommands (program: Command): void {
  const relocate = program.command('relocate')
    .description('move a disk\'s data to other nodes while it is in use: copy near, flip, drop far')
    .argument('[disk]', 'the disk to move')
    .option('--to <site>', 'move the replicas to live nodes of this site', idOption('site'))
    .option('--nodes <a,b>', 'move the replicas to exactly these nodes', nodeListOption)
    .option('--replicas <n>', 'replica count after the move (default: the disk\'s)', replicasOption)
    .option('--rate <MB/s>', 'cap the copy rate', rateOption)
    .option('--no-probe', 'do not measure the link for the estimate (the plan then estimates only from --rate)')
    .option('--dry-run', 'print the plan and change nothing')
    .option('--wait', 'show progress until the relocation ends')
    .option('--json', 'print the plan (and the final record) as JSON')
    .action(async (name: string | undefined, opts, cmd: Command) => {
      if (name === undefined) { cmd.help(); return }
      await withMeta(cmd, async (meta) => {
        const rateBytesPerSec: number = opts.rate ?? 0
        const plan = await planRelocation(meta, {
          disk: name,
          site: opts.to,
          nodes: opts.nodes,
          replicas: opts.replicas,
          rateCapBytesPerSec: rateBytesPerSec,
          probeBudgetMs: opts.probe === false ? 0 : undefined
        })
        if (opts.json === true) printJson(plan)
        else {
          process.stdout.write(`plan for ${plan.disk}: ${plan.fromSites.join(',')} → ${plan.toSites.join(',')}\n`)
          printTable(['TARGETS', 'DROP', 'BLOCKS', 'WRITTEN', 'TO COPY', 'ESTIMATE'], [[
            plan.targetNodes.join(','), plan.dropNodes.join(',') || '-', plan.blocks, plan.writtenBlocks, formatBytes(plan.bytes),
            describeEstimate(plan.estimate)
          ]])
        }
        if (opts.dryRun === true) return
        await startRelocation(meta, plan, rateBytesPerSec)
        const lease = await readLease(meta, name)
        if (opts.wait !== true && lease.holder !== null) {
          process.stdout.write(`relocation started on ${lease.holder.host} (it holds the disk's lease); follow it with 'ukai relocate status ${name}'\n`)
          return
        }
        if (opts.wait !== true) process.stdout.write('nobody holds the disk\'s lease: running the relocation here\n')
        const end = await follow(meta, name, opts.json !== true)
        if (opts.json === true) printJson(end)
        else process.stdout.write(`relocation of ${name}: ${end.state}${end.reason !== '' ? ` (${end.reason})` : ''}\n`)
        if (end.state !== 'done') process.exitCode = 1
      })
    })

  relocate.command('status [disk]')
    .description('relocations: state, progress, rate, ETA, who runs them')
    .option('--json', 'print JSON')
    .action(async (name: string | undefined, opts, cmd: Command) => {
      const recs = await withMeta(cmd, async (meta) => {
        const names = name !== undefined ? [name] : await meta.listDiskNames()
        if (name !== undefined) await meta.getDisk(name)
        const out: RelocationRecord[] = []
        for (const n of names) { const r = await meta.getRelocation(n); if (r !== null) { const { version: _v, ...rec } = r; out.push(rec) } }
        return out
      })
      // `relocate` itself has --json too; commander gives it to whichever parses first.
      if (opts.json === true || cmd.parent?.opts().json === true) return printJson(recs.map(r => ({ ...r, ...describe(r) })))
      if (recs.length === 0) { process.stdout.write(name !== undefined ? `disk '${name}' has no relocation\n` : 'no relocations\n'); return }
      printTable(['DISK', 'STATE', 'PROGRESS', 'COPIED', 'RATE', 'ETA', 'TO', 'EXECUTOR', 'REASON'], recs.map((r) => {
        const d = describe(r)
        return [r.disk, r.state, `${d.percent}%`, `${formatBytes(r.progress.bytes)} / ${formatBytes(r.plan.bytes)}`, formatRate(d.rateBytesPerSec),
          d.etaSec === null || r.state === 'done' ? '-' : formatDuration(d.etaSec), r.targetNodes.join(','), r.executor || '-', r.reason || '-']
      }))
    })

  relocate.command('cancel <disk>')
    .description('stop a relocation and take back the replicas it added')
    .action(async (name: string, _opts, cmd: Command) => {
      await withMeta(cmd, async (meta) => {
        const r = await meta.getRelocation(name)
        if (r === null) throw UkaiError.notFound(`disk '${name}' has no relocation`)
        if (r.state === 'done' || r.state === 'flipping') throw UkaiError.busy(`relocation of '${name}' is ${r.state}: too late to cancel`)
        if (r.state === 'cancelled') { process.stdout.write(`relocation of ${name} is already cancelled\n`); return }
        const { version, ...rec } = r
        await meta.updateRelocation({ ...rec, state: 'cancelled', finishedAtMs: 0 }, version)
        // The lease holder's runner rolls back; with no holder, roll back here.
        const end = await follow(meta, name, false)
        process.stdout.write(`relocation of ${name}: ${end.state}\n`)
      })
    })
}

// `ukai disk repair NAME`: stale replicas (a node missed writes while it was down, or was full)
// copied again from in-sync ones — a relocation onto the disk's own nodes, where a dead or full
// node is replaced by one with room (src/relocate/repair.ts); every version moves. A healthy disk
// is a no-op: exit 0.
export function repairCommand (disk: Command): void {
  disk.command('repair <name>')
    .description('copy the disk\'s stale replicas again from in-sync ones (every version), onto another node where theirs is full or down, and wait')
    .option('--rate <MB/s>', 'cap the copy rate', rateOption)
    .option('--json', 'print the final relocation record as JSON')
    .action(async (name: string, opts, cmd: Command) => {
      await withMeta(cmd, async (meta) => {
        const rateBytesPerSec: number = opts.rate ?? 0
        const repair = await planRepair(meta, name)
        if (repair === null) {
          if (opts.json === true) printJson({ disk: name, state: 'nothing-to-repair', staleBlocks: 0 })
          else process.stdout.write(`disk ${name} has no stale replica; nothing to repair\n`)
          return
        }
        const nodes = repair.targets
        const plan = await planRelocation(meta, { disk: name, nodes, replicas: nodes.length, rateCapBytesPerSec: rateBytesPerSec })
        if (opts.json !== true) {
          for (const r of repair.replaced) process.stdout.write(`node ${r.node} is ${r.why === 'dead' ? 'down' : 'full'}: its replicas move to ${r.by}\n`)
          process.stdout.write(`repairing ${name} on ${nodes.join(',')}: ${plural(repair.staleBlocks, 'block')} with a stale replica, ${repair.belowReplicaBlocks} below their replica count; up to ${formatBytes(plan.bytes)} to copy, ${describeEstimate(plan.estimate)}\n`)
        }
        await startRelocation(meta, plan, rateBytesPerSec)
        const end = await follow(meta, name, opts.json !== true)
        if (opts.json === true) printJson({ ...end, replaced: repair.replaced })
        else process.stdout.write(`repair of ${name}: ${end.state}${end.reason !== '' ? ` (${end.reason})` : ''}\n`)
        if (end.state !== 'done') process.exitCode = 1
      })
    })
}
