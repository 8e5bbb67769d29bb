// ukai relocate DISK --to SITE | --nodes a,b  ·  relocate status [DISK]  ·  relocate cancel DISK
import cliProgress from 'cli-progress'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { readLease } from '../meta/lease'
import { readControllerState } from '../meta/election'
import { ControllerLeader, RelocationRecord } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { CopyEstimate, formatDuration } from '../relocate/copy-estimate'
import { planRelocation } from '../relocate/plan'
import { planRepair } from '../relocate/repair'
import { paceText, relocationProgress } from '../relocate/progress'
import { runRelocationHere } from '../relocate/run-here'
import { isActive, startRelocation } from '../relocate/start'
import { formatBytes, formatRate, plural } from '../units'
import { withMeta } from './context'
import { isTenantCli, tenantOr } from './tenant-api'
import type { RelocationPlan } from '../relocate/plan'
import { printJson, printTable } from './output'
import { idOption, nodeListOption, rateOption, replicasOption } from './parse'
import { sleep } from '../lib/timers'

const POLL_MS = 500
// An active relocation whose lease nobody holds for this long gets run by a waiting CLI.
const ORPHAN_AFTER_MS = 2000
// `relocate status` has nine columns: with a long reason or node list (the whole of them is in
// --json) a row stays within ~120 columns. DISK … EXECUTOR, REASON (a slowed copy's why goes
// on a line of its own under the table).
const STATUS_CELL_CHARS_MAX = [24, 10, 8, 24, 12, 16, 20, 16, 32]

// What the controller leader last said of a disk it does not repair (e.g. "postponed: node a1
// write p99 290 ms (idle 36 ms, seen from hv-a)"), as `controller status` shows it under `refused`.
function repairRefusal (leader: ControllerLeader | null, disk: string): string | undefined {
  const refused = leader?.duties.find(d => d.name === 'automatic-repair')?.detail?.refused
  const why = typeof refused === 'object' && refused !== null ? (refused as Record<string, unknown>)[disk] : undefined
  return typeof why === 'string' ? why : undefined
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

// Percent, rate and ETA as every display shows them (relocate/progress.ts).
export function describe (r: RelocationRecord): { percent: number, rateBytesPerSec: number, etaSec: number | null } {
  const { percent, rateBytesPerSec, etaSec } = relocationProgress(r)
  return { percent, rateBytesPerSec, etaSec }
}

// One progress line's figures: the bar's and `relocate status`'s.
function progressPayload (rec: RelocationRecord): { copied: string, planned: string, rate: string, etaText: string, state: string, pct: number } {
  const p = relocationProgress(rec)
  // Our own percent and ETA: cli-progress's count bytes against a total that moves, and print "NFs" before the first byte.
  return { copied: formatBytes(p.doneBytes), planned: formatBytes(p.totalBytes), rate: formatRate(p.rateBytesPerSec), etaText: p.etaSec === null ? '-' : formatDuration(p.etaSec), state: rec.state + (paceText(rec) !== '' ? `, ${paceText(rec)}` : ''), pct: p.percent }
}

const BAR_STEPS = 1000

export async function follow (meta: MetaStore, name: string, showBar: boolean): Promise<RelocationRecord> {
  const bar = showBar ? new cliProgress.SingleBar({ format: ' {bar} {pct}% | {copied} of {planned} | {rate} | ETA {etaText} | {state}', noTTYOutput: true, notTTYSchedule: 2000 }, cliProgress.Presets.shades_classic) : null
  let started = false
  let orphanSinceMs = 0
  // A lease-free run of ours goes on in the background while this loop keeps showing progress.
  let runningHere: Promise<unknown> | null = null
  try {
    for (;;) {
      const rec = await meta.getRelocation(name)
      if (rec === null) throw UkaiError.notFound(`disk '${name}' has no relocation`)
      if (bar !== null) {
        const payload = progressPayload(rec)
        const steps = Math.round(relocationProgress(rec).fraction * BAR_STEPS)
        if (!started) { bar.start(BAR_STEPS, steps, payload); started = true }
        bar.update(steps, payload)
      }
      if (rec.state === 'done' || rec.state === 'paused' || (rec.state === 'cancelled' && rec.finishedAtMs !== 0)) return rec
      // Nobody holds the lease (the executor crashed, or the VM closed the disk): run it here.
      if (runningHere === null) {
        const lease = await readLease(meta, name)
        if (lease.holder === null) {
          orphanSinceMs ||= Date.now()
          if (Date.now() - orphanSinceMs >= ORPHAN_AFTER_MS || rec.executor === '') {
            const run = runRelocationHere(meta, name).finally(() => { runningHere = null; orphanSinceMs = 0 })
            runningHere = run
            await Promise.race([run, sleep(POLL_MS)])
            continue
          }
        } else {
          orphanSinceMs = 0
        }
        await sleep(POLL_MS)
      } else {
        await Promise.race([runningHere, sleep(POLL_MS)])
      }
    }
  } finally {
    bar?.stop()
    await runningHere  // (a run that failed: the record says why, as 'paused')
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
      if (isTenantCli()) {
        // A tenant moves its disk to a site it is allowed; the agents' controller runs the copy.
        if (opts.to === undefined || opts.nodes !== undefined || opts.replicas !== undefined || opts.dryRun === true || opts.wait === true) {
          throw UkaiError.badArgument('with a tenant\'s certificate, relocate takes --to SITE (and --rate); --nodes, --replicas, --dry-run and --wait are for admins')
        }
        const plan = await tenantOr<RelocationPlan, 'Relocate'>(cmd, 'Relocate', { disk: name, site: opts.to, rateBytesPerSec: opts.rate ?? 0 }, async () => { throw UkaiError.internal('not a tenant') })
        if (opts.json === true) printJson(plan)
        else process.stdout.write(`relocation of ${plan.disk} to ${plan.toSites.join(',')} started (${formatBytes(plan.bytes)} to copy); follow it with 'ukai relocate status ${name}' (an admin) or 'ukai disk info ${name}'\n`)
        return
      }
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
        await startRelocation(meta, plan, rateBytesPerSec, { placement: opts.to !== undefined ? { site: opts.to } : { nodes: plan.targetNodes } })
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
      let waits: string | undefined  // why the controller holds back the named disk's repair
      const recs = await withMeta(cmd, async (meta) => {
        const names = name !== undefined ? [name] : await meta.listDiskNames()
        if (name !== undefined) await meta.getDisk(name)
        const out: RelocationRecord[] = []
        for (const n of names) { const r = await meta.getRelocation(n); if (r !== null) { const { version: _v, ...rec } = r; out.push(rec) } }
        if (name !== undefined && out.length === 0) waits = repairRefusal((await readControllerState(meta)).leader, name)
        return out
      })
      // `relocate` itself has --json too; commander gives it to whichever parses first.
      if (opts.json === true || cmd.parent?.opts().json === true) return printJson(recs.map(r => ({ ...r, ...describe(r) })))
      if (recs.length === 0) {
        process.stdout.write(name !== undefined ? `disk '${name}' has no relocation${waits !== undefined ? `; the controller's automatic repair of it is ${waits}` : ''}\n` : 'no relocations\n')
        return
      }
      printTable(['DISK', 'STATE', 'PROGRESS', 'COPIED', 'RATE', 'ETA', 'TO', 'EXECUTOR', 'REASON'], recs.map((r) => {
        const p = progressPayload(r)
        return [r.disk, r.state, `${p.pct}%`, `${p.copied} / ${p.planned}`, p.rate, p.etaText, r.targetNodes.join(','), r.executor || '-', r.reason || paceText(r).split(':')[0] || '-']
      }), { cellCharsMax: STATUS_CELL_CHARS_MAX })
      for (const r of recs) if (paceText(r) !== '') process.stdout.write(`${r.disk}: ${paceText(r)}\n`)
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
        // A repair already running (the controller's, after a node came back): follow it.
        const running = await meta.getRelocation(name)
        if (running !== null && isActive(running) && running.placement === undefined) {
          if (opts.json !== true) process.stdout.write(`a repair of ${name} onto ${running.targetNodes.join(',')} is running already (${running.executor !== '' ? running.executor : 'waiting for its executor'}); following it\n`)
          const end = await follow(meta, name, opts.json !== true)
          if (opts.json === true) printJson({ ...end, replaced: [] })
          else process.stdout.write(`repair of ${name}: ${end.state}${end.reason !== '' ? ` (${end.reason})` : ''}\n`)
          if (end.state !== 'done') process.exitCode = 1
          return
        }
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
