// ukai node list
import { Command } from 'commander'
import { RttReport } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { formatBytes } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'
import { idOption } from './parse'

// The round-trip report a host published, or null (none yet, or the host's agent is down).
export async function rttReportOf (meta: MetaStore, host: string): Promise<RttReport | null> {
  return (await meta.listRtts()).find(r => r.host === host) ?? null
}

export function formatRtt (ms: number | undefined): string {
  if (ms === undefined) return '-'
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`
}

export function nodeCommands (program: Command): void {
  const node = program.command('node').description('storage nodes')
  node.command('list').alias('ls')
    .description('list storage nodes with their site, address, liveness and capacity (and round trips from a host)')
    .option('--from <host>', 'add the round trip from HOST (as measured by the agent on that host)', idOption('host name in --from'))
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const from = opts.from as string | undefined
      const [nodes, report] = await withMeta(cmd, async meta => [await meta.listNodes(), from === undefined ? null : await rttReportOf(meta, from)] as const)
      if (from !== undefined && report === null) process.stderr.write(`ukai: warning: no round-trip report from host '${from}' (is its agent running?)\n`)
      if (opts.json === true) {
        return printJson(from === undefined ? nodes : nodes.map(n => ({ ...n, rttMs: report?.rttMs[n.id] ?? null })))
      }
      printTable(['ID', 'SITE', 'HOST', 'ADDRESS', 'ALIVE', 'USED', 'FREE', 'CAPACITY', ...(from !== undefined ? [`RTT FROM ${from}`] : [])], nodes.map(n => [
        n.id, n.site, n.host, n.alive?.address ?? n.address, n.alive !== null ? 'yes' : 'no',
        n.alive !== null ? formatBytes(n.alive.usedBytes) : '-', n.alive !== null ? formatBytes(n.alive.freeBytes) : '-',
        n.alive !== null ? formatBytes(n.alive.capacityBytes) : '-',
        ...(from !== undefined ? [formatRtt(report?.rttMs[n.id])] : [])
      ]))
    })
}
