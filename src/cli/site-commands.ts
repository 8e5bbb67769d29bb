// ukai site list: per site its storage nodes (alive / total), agents and capacity.
import { Command } from 'commander'
import { AgentView, NodeView } from '../meta/store'
import { formatBytes } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'

export interface SiteSummary {
  site: string
  nodes: string[]          // ids, sorted
  nodesAlive: number
  agents: string[]         // hosts of agents registered at the site, sorted
  agentsAlive: number
  capacityBytes: number    // of the live nodes
  usedBytes: number
  freeBytes: number
}

export function summarizeSites (nodes: NodeView[], agents: AgentView[]): SiteSummary[] {
  const sites = new Map<string, SiteSummary>()
  const of = (site: string): SiteSummary => {
    let s = sites.get(site)
    if (s === undefined) {
      s = { site, nodes: [], nodesAlive: 0, agents: [], agentsAlive: 0, capacityBytes: 0, usedBytes: 0, freeBytes: 0 }
      sites.set(site, s)
    }
    return s
  }
  for (const n of nodes) {
    const s = of(n.site)
    s.nodes.push(n.id)
    if (n.alive === null) continue
    s.nodesAlive++
    s.capacityBytes += n.alive.capacityBytes
    s.usedBytes += n.alive.usedBytes
    s.freeBytes += n.alive.freeBytes
  }
  for (const a of agents) {
    const s = of(a.site)
    s.agents.push(a.host)
    if (a.alive !== null) s.agentsAlive++
  }
  for (const s of sites.values()) { s.nodes.sort(); s.agents.sort() }
  return [...sites.values()].sort((a, b) => a.site.localeCompare(b.site))
}

export function siteCommands (program: Command): void {
  const site = program.command('site').description('sites (data centres)')
  site.command('list').alias('ls')
    .description('list sites with their storage nodes (alive / total), agents and capacity')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const sites = await withMeta(cmd, async meta => summarizeSites(await meta.listNodes(), await meta.listAgents()))
      if (opts.json === true) return printJson(sites)
      printTable(['SITE', 'NODES', 'ALIVE', 'AGENTS', 'USED', 'FREE', 'CAPACITY'], sites.map(s => [
        s.site, s.nodes.join(' ') || '-', `${s.nodesAlive}/${s.nodes.length}`,
        s.agents.length === 0 ? '-' : `${s.agents.join(' ')} (${s.agentsAlive} up)`,
        formatBytes(s.usedBytes), formatBytes(s.freeBytes), formatBytes(s.capacityBytes)
      ]))
    })
}
