// ukai node list
import { Command } from 'commander'
import { formatBytes } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'

export function nodeCommands (program: Command): void {
  const node = program.command('node').description('storage nodes')
  node.command('list')
    .description('list storage nodes with their site, address, liveness and capacity')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const nodes = await withMeta(cmd, meta => meta.listNodes())
      if (opts.json === true) return printJson(nodes)
      printTable(['ID', 'SITE', 'HOST', 'ADDRESS', 'ALIVE', 'USED', 'FREE', 'CAPACITY'], nodes.map(n => [
        n.id, n.site, n.host, n.alive?.address ?? n.address, n.alive !== null ? 'yes' : 'no',
        n.alive !== null ? formatBytes(n.alive.usedBytes) : '-', n.alive !== null ? formatBytes(n.alive.freeBytes) : '-',
        n.alive !== null ? formatBytes(n.alive.capacityBytes) : '-'
      ]))
    })
}
