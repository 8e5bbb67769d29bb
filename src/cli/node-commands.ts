// ukai node list · node drain ID [--wait] · node undrain ID · node remove ID
import { Command } from 'commander'
import { UkaiError, isUkaiError } from '../errors'
import { checkDrainable, holdingsOf, listNodeStates, markDraining, removeNode, undrain } from '../admin/node-admin'
import { RttReport } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { formatDuration } from '../relocate/copy-estimate'
import { leavingNodes, startEvacuation } from '../relocate/evacuate'
import { isActive } from '../relocate/start'
import { formatBytes, plural } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'
import { idOption, rateOption } from './parse'
import { follow } from './relocate-commands'

// Rounds of "start what can move, wait for it" a drain --wait makes before it gives up (a disk
// written to meanwhile, or whose relocation was busy, needs a second one).
const DRAIN_ROUNDS_MAX = 5

// The round-trip report a host published, or null (none yet, or the host's agent is down).
export async function rttReportOf (meta: MetaStore, host: string): Promise<RttReport | null> {
  return (await meta.listRtts()).find(r => r.host === host) ?? null
}

export function formatRtt (ms: number | undefined): string {
  if (ms === undefined) return '-'
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`
}

function nodeId (id: string): string {
  return idOption('storage node id')(id)
}

export function nodeCommands (program: Command): void {
  const node = program.command('node').description('storage nodes: list, drain, remove')
  node.command('list').alias('ls')
    .description('list storage nodes: site, address, state (up/down/out/draining) and for how long, capacity (and round trips from a host)')
    .option('--from <host>', 'add the round trip from HOST (as measured by the agent on that host)', idOption('host name in --from'))
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const from = opts.from as string | undefined
      const [nodes, report] = await withMeta(cmd, async meta => [await listNodeStates(meta), from === undefined ? null : await rttReportOf(meta, from)] as const)
      if (from !== undefined && report === null) process.stderr.write(`ukai: warning: no round-trip report from host '${from}' (is its agent running?)\n`)
      const now = Date.now()
      if (opts.json === true) {
        const rows = nodes.map(n => ({ ...n, forMs: n.sinceMs === null ? null : now - n.sinceMs }))
        return printJson(from === undefined ? rows : rows.map(n => ({ ...n, rttMs: report?.rttMs[n.id] ?? null })))
      }
      printTable(['ID', 'SITE', 'HOST', 'ADDRESS', 'STATE', 'FOR', 'USED', 'FREE', 'CAPACITY', ...(from !== undefined ? [`RTT FROM ${from}`] : [])], nodes.map(n => [
        n.id, n.site, n.host, n.alive?.address ?? n.address, n.state, n.sinceMs === null ? '-' : formatDuration(Math.max(0, now - n.sinceMs) / 1000),
        n.alive !== null ? formatBytes(n.alive.usedBytes) : '-', n.alive !== null ? formatBytes(n.alive.freeBytes) : '-',
        n.alive !== null ? formatBytes(n.alive.capacityBytes) : '-',
        ...(from !== undefined ? [formatRtt(report?.rttMs[n.id])] : [])
      ]))
    })

  node.command('drain <id>')
    .description('move every replica off the node while it still serves (refused, nothing changed, when a disk could not keep its placement)')
    .option('--wait', 'show progress until nothing is left on the node')
    .option('--rate <MB/s>', 'cap the copy rate of each disk', rateOption)
    .option('--json', 'print what was started (and, with --wait, what is left) as JSON')
    .action(async (rawId: string, opts, cmd: Command) => {
      const id = nodeId(rawId)
      await withMeta(cmd, async (meta) => {
        await meta.getNode(id)
        const holdings = await checkDrainable(meta, id)
        await markDraining(meta, id)
        const started = await startAll(meta, id, opts.rate ?? 0)
        if (opts.json !== true) {
          process.stdout.write(`node ${id} is draining: ${plural(holdings.length, 'disk')} to move (${started.map(s => s.disk).join(', ') || 'none'} started${started.length < holdings.length ? '; the rest after their running relocations' : ''})\n`)
        }
        if (opts.wait !== true) {
          if (opts.json === true) printJson({ node: id, state: 'draining', disks: holdings.map(h => h.disk), started })
          else process.stdout.write(`follow it with 'ukai node list' and 'ukai relocate status'; the controller finishes it\n`)
          return
        }
        const left = await waitDrained(meta, id, opts.rate ?? 0, opts.json !== true)
        if (opts.json === true) printJson({ node: id, state: 'draining', disks: holdings.map(h => h.disk), left })
        if (left.length > 0) throw UkaiError.io(`node ${id} still holds replicas of ${left.map(h => `'${h.disk}'`).join(', ')}; see 'ukai relocate status'`)
        if (opts.json !== true) process.stdout.write(`node ${id} is drained: it holds no replica; 'ukai node remove ${id}' removes it\n`)
      })
    })

  node.command('undrain <id>')
    .description('take a drain back: the node gets new replicas again (what moved stays moved)')
    .action(async (rawId: string, _opts, cmd: Command) => {
      const id = nodeId(rawId)
      const changed = await withMeta(cmd, async meta => await undrain(meta, id))
      process.stdout.write(changed ? `node ${id} is no longer draining\n` : `node ${id} was not draining; nothing changed\n`)
    })

  node.command('remove <id>').alias('rm')
    .description('forget a node (refused while it holds the only in-sync copy of anything)')
    .option('--json', 'print what the node still shared as JSON')
    .action(async (rawId: string, opts, cmd: Command) => {
      const id = nodeId(rawId)
      const shared = await withMeta(cmd, async meta => await removeNode(meta, id))
      if (opts.json === true) return printJson({ node: id, state: 'removed', sharedDisks: shared.map(h => h.disk) })
      process.stdout.write(`node ${id} removed${shared.length > 0 ? `; the controller makes new copies of what it shared (${shared.map(h => h.disk).join(', ')})` : ''}\n`)
    })
}

// Records an evacuation for every disk on the node that has no relocation running.
async function startAll (meta: MetaStore, id: string, rateBytesPerSec: number): Promise<Array<{ disk: string, targets: string[] }>> {
  const leaving = await leavingNodes(meta)
  const nodes = await meta.listNodes()
  const out: Array<{ disk: string, targets: string[] }> = []
  for (const h of await holdingsOf(meta, id)) {
    try {
      const ev = await startEvacuation(meta, h.disk, leaving, nodes, { rateBytesPerSec })
      if (ev !== null) out.push({ disk: h.disk, targets: ev.targets })
    } catch (err) {
      if (!isUkaiError(err, 'BUSY')) throw err
    }
  }
  return out
}

// Follows every disk's relocation (running an unleased one here, as `relocate --wait` does)
// until the node holds nothing, or DRAIN_ROUNDS_MAX rounds went by; returns what is left.
async function waitDrained (meta: MetaStore, id: string, rateBytesPerSec: number, showBar: boolean): Promise<Awaited<ReturnType<typeof holdingsOf>>> {
  for (let round = 0; ; round++) {
    const left = await holdingsOf(meta, id)
    if (left.length === 0 || round >= DRAIN_ROUNDS_MAX) return left
    for (const h of left) {
      const rec = await meta.getRelocation(h.disk)
      if (rec === null || !(isActive(rec) || rec.state === 'copying')) continue
      if (showBar) process.stdout.write(`${h.disk}:\n`)
      const end = await follow(meta, h.disk, showBar)
      if (end.state === 'paused') throw UkaiError.io(`moving disk '${h.disk}' off node ${id} paused: ${end.reason}; the node stays draining (resume with 'ukai node drain ${id} --wait')`)
    }
    await startAll(meta, id, rateBytesPerSec)
  }
}
