// ukai prepare-migration DISK… --to-host HOST · ukai finish-migration DISK… — the migration hook
// for orchestrators that do not use libvirt's hooks (plain QEMU, scripts). See relocate/migration.ts.
import os from 'node:os'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { finishDiskMigration, prepareDiskToward, siteOfHost, type FinishOutcome, type PrepareOutcome } from '../relocate/migration'
import { formatBytes } from '../units'
import { withMeta } from './context'
import { printJson, printTable } from './output'
import { idOption, msOption, rateOption } from './parse'
import { follow } from './relocate-commands'

const RELEASE_TIMEOUT_MS_DEFAULT = 5000

export function migrationCommands (program: Command): void {
  program.command('prepare-migration')
    .description('before moving a VM to HOST: start relocating its disks toward HOST\'s site (the copy runs in the background on the lease holder)')
    .argument('<disks...>', 'the VM\'s disks')
    .requiredOption('--to-host <host>', 'the destination hypervisor (its agent name)', idOption('host name'))
    .option('--rate <MB/s>', 'cap the copy rate', rateOption)
    .option('--json', 'print the outcome as JSON')
    .action(async (disks: string[], opts, cmd: Command) => {
      const rateBytesPerSec: number = opts.rate ?? 0
      const failures: Array<{ disk: string, err: UkaiError }> = []
      const rows = await withMeta(cmd, async (meta) => {
        const site = await siteOfHost(meta, opts.toHost)
        const out: Array<PrepareOutcome | { disk: string, error: string }> = []
        for (const disk of disks) {
          try {
            out.push(await prepareDiskToward(meta, disk, site, { rateBytesPerSec }))
          } catch (err) {
            if ((err as UkaiError).code === 'ZK_UNAVAILABLE') throw err
            failures.push({ disk, err: err as UkaiError })
            out.push({ disk, error: (err as Error).message })
          }
        }
        return out
      })
      if (opts.json === true) printJson(rows)
      else {
        printTable(['DISK', 'ACTION', 'TO', 'TO COPY', 'RUNS ON'], rows.map(r => 'error' in r
          ? [r.disk, 'refused', '-', '-', r.error]
          : [r.disk, r.action, r.site + (r.targetNodes.length > 0 ? ` (${r.targetNodes.join(',')})` : ''), r.action === 'started' ? formatBytes(r.bytes) : '-', r.executor || 'the controller (nobody holds the lease)']))
      }
      if (failures.length > 0) throw new UkaiError(failures[0].err.code ?? 'INTERNAL', `not prepared: ${failures.map(f => `${f.disk}: ${f.err.message}`).join('; ')}`)
    })

  program.command('finish-migration')
    .description('after a VM left this host: let its disks\' leases go and report the relocations (--wait: until their data is only at the destination)')
    .argument('<disks...>', 'the VM\'s disks')
    .option('--host <name>', 'this (the source) hypervisor\'s agent name', idOption('host name'), os.hostname())
    .option('--release-timeout-ms <ms>', 'how long the agent may take to flush and release a lease it still holds', msOption('--release-timeout-ms', 0), RELEASE_TIMEOUT_MS_DEFAULT)
    .option('--wait', 'then follow each relocation until it is done (far replicas dropped)')
    .option('--json', 'print the outcome as JSON')
    .action(async (disks: string[], opts, cmd: Command) => {
      const releaseTimeoutMs: number = opts.releaseTimeoutMs
      await withMeta(cmd, async (meta) => {
        for (const d of disks) await meta.getDisk(d) // unknown disks: refused before anything changes
        const out: FinishOutcome[] = []
        for (const d of disks) out.push(await finishDiskMigration(meta, d, opts.host, { releaseTimeoutMs }))
        if (opts.wait === true) {
          for (const o of out) {
            if (o.relocation === null || o.relocation.state === 'done') continue
            const end = await follow(meta, o.disk, opts.json !== true)
            o.relocation = { state: end.state, targetNodes: end.targetNodes, reason: end.reason, percent: end.state === 'done' ? 100 : o.relocation.percent }
          }
        }
        if (opts.json === true) printJson(out)
        else {
          printTable(['DISK', 'LEASE', 'HOLDER', 'RELOCATION', 'PROGRESS', 'TO'], out.map(o => [
            o.disk, o.lease, o.leaseHolder || '-', o.relocation === null ? '-' : o.relocation.state + (o.relocation.reason !== '' ? ` (${o.relocation.reason})` : ''),
            o.relocation === null ? '-' : `${o.relocation.percent}%`, o.relocation?.targetNodes.join(',') ?? '-'
          ]))
        }
        const held = out.filter(o => o.lease === 'still-held' || o.lease === 'still-open-here')
        if (held.length > 0) throw UkaiError.busy(`still in use on ${opts.host}: ${held.map(o => `${o.disk} (${o.lease})`).join(', ')}`)
        if (opts.wait === true && out.some(o => o.relocation !== null && o.relocation.state !== 'done')) process.exitCode = 1
      })
    })
}
