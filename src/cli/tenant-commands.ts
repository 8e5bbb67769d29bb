// ukai tenant create | list | info | quota | delete (src/admin/tenant-admin.ts; docs/security.md "Tenants")
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { formatBytes, parseSize } from '../units'
import { TenantRecord } from '../meta/schema'
import { createTenantChecked, deleteTenantChecked, listTenantsWithUsage, setTenantQuota, tenantInfo } from '../admin/tenant-admin'
import { withMeta } from './context'
import { printJson, printTable } from './output'
import { idOption } from './parse'

// A quota value: `none` lifts the limit; a number (0 included: nothing may grow) sets it.
// ('none' stays a word until the action: commander turns a parser's null into '').
const NONE = 'none'
function quotaOption (flag: string, kind: 'size' | 'count'): (text: string) => number | typeof NONE {
  return (text) => {
    const t = text.trim()
    if (t.toLowerCase() === NONE) return NONE
    if (kind === 'count') {
      if (!/^\d+$/.test(t)) throw UkaiError.badArgument(`bad ${flag} '${text}': expected a whole number ≥ 0, or none`)
      return Number(t)
    }
    return parseSize(t, flag)
  }
}

function siteListOption (text: string): string[] {
  const sites = text.split(',').map(s => s.trim())
  if (sites.some(s => s === '')) throw UkaiError.badArgument(`bad --sites '${text}': expected site names separated by commas`)
  for (const s of sites) idOption('site in --sites')(s)
  return sites
}

function usageOf (used: number, quota: number | null, fmt: (n: number) => string): string {
  return `${fmt(used)} / ${quota === null ? 'none' : fmt(quota)}`
}

function printTenant (t: TenantRecord): void {
  const lines = [
    ['tenant', t.name],
    ['capacity', usageOf(t.usage.capacityBytes, t.quota.capacityBytes, formatBytes) + ' (provisioned / quota)'],
    ['disks', usageOf(t.usage.disks, t.quota.disks, String)],
    ['snapshots', usageOf(t.usage.snapshots, t.quota.snapshots, String)],
    ['sites', t.sites?.join(', ') ?? 'any']
  ]
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(10)} ${v}\n`)
}

export function tenantCommands (program: Command): void {
  const tenant = program.command('tenant').description('tenants: who owns which disks, and their quotas (capacity, disks, snapshots)')

  tenant.command('create <name>')
    .description(`create a tenant (the tenant 'default' always exists: disks created without --tenant belong to it)`)
    .option('--sites <a,b>', "sites the tenant's disks may be relocated to (default: any)", siteListOption)
    .option('--json', 'print the tenant record as JSON')
    .action(async (name: string, opts, cmd: Command) => {
      const rec = await withMeta(cmd, meta => createTenantChecked(meta, name, { sites: opts.sites }))
      if (opts.json === true) printJson(rec)
      else process.stdout.write(`created tenant ${rec.name} (no quotas; set them with 'ukai tenant quota ${rec.name} --capacity … --disks … --snapshots …')\n`)
    })

  tenant.command('list').alias('ls')
    .description('every tenant with what it provisions against its quotas')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const all = await withMeta(cmd, meta => listTenantsWithUsage(meta))
      if (opts.json === true) return printJson(all)
      printTable(['TENANT', 'CAPACITY (USED / QUOTA)', 'DISKS', 'SNAPSHOTS', 'SITES'], all.map(t => [
        t.name, usageOf(t.usage.capacityBytes, t.quota.capacityBytes, formatBytes), usageOf(t.usage.disks, t.quota.disks, String),
        usageOf(t.usage.snapshots, t.quota.snapshots, String), t.sites?.join(',') ?? 'any'
      ]))
    })

  tenant.command('info <name>')
    .description("one tenant's usage and quotas")
    .option('--json', 'print JSON')
    .action(async (name: string, opts, cmd: Command) => {
      const rec = await withMeta(cmd, meta => tenantInfo(meta, name))
      if (opts.json === true) printJson(rec)
      else printTenant(rec)
    })

  tenant.command('quota <name>')
    .description('set quotas (any of them; the others stay): none lifts one, 0 allows nothing more. Counts provisioned size, disks (clones too) and snapshots; a quota below current usage takes nothing away but stops growth')
    .option('--capacity <size>', 'total provisioned size of its disks, e.g. 2T, or none', quotaOption('--capacity', 'size'))
    .option('--disks <n>', 'number of disks (clones count), or none', quotaOption('--disks', 'count'))
    .option('--snapshots <n>', 'number of snapshots, or none', quotaOption('--snapshots', 'count'))
    .option('--json', 'print the tenant record as JSON')
    .action(async (name: string, opts, cmd: Command) => {
      const q = (v: number | typeof NONE | undefined): number | null | undefined => v === NONE ? null : v
      const rec = await withMeta(cmd, meta => setTenantQuota(meta, name, { capacityBytes: q(opts.capacity), disks: q(opts.disks), snapshots: q(opts.snapshots) }))
      if (opts.json === true) return printJson(rec)
      printTenant(rec)
      const over = (['capacityBytes', 'disks', 'snapshots'] as const).filter(k => rec.quota[k] !== null && rec.usage[k] > (rec.quota[k] as number))
      if (over.length > 0) process.stderr.write(`ukai: warning: tenant ${rec.name} is over its new ${over.map(k => k === 'capacityBytes' ? 'capacity' : k).join(' and ')} quota: nothing is taken away, nothing more grows until it is back under\n`)
    })

  tenant.command('delete <name>').alias('rm')
    .description('delete a tenant that owns no disk')
    .action(async (name: string, _opts, cmd: Command) => {
      await withMeta(cmd, meta => deleteTenantChecked(meta, name))
      process.stdout.write(`deleted tenant ${name}\n`)
    })
}
