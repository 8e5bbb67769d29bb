// `ukai scrub DISK|--all [--deep] [--wait] [--json]`: every node holding the disk checks its
// replicas against their checksums now; bad replicas are marked stale (src/admin/scrub-admin.ts).
// --wait also repairs every stale replica of the disk (as `ukai disk repair` does: these, and
// any an earlier scrub or a read marked) and waits for that. Exit status 1 when
// something bad was found that is not repaired (unrepairable or diverged blocks, a failed
// repair), or a node holding the disk could not be asked.
import { Command } from 'commander'
import { ScrubDiskReport, scrubDisk } from '../admin/scrub-admin'
import { UkaiError, isUkaiError } from '../errors'
import { MetaStore } from '../meta/store'
import { planRelocation } from '../relocate/plan'
import { planRepair } from '../relocate/repair'
import { startRelocation } from '../relocate/start'
import { formatBytes, plural } from '../units'
import { withMeta } from './context'
import { printJson } from './output'
import { follow } from './relocate-commands'

export function scrubCommands (program: Command): void {
  program.command('scrub [disk]')
    .description('check a disk\'s stored blocks against their checksums on every node (--deep: compare the replicas too); bad replicas are marked stale')
    .option('--all', 'every disk')
    .option('--deep', 'also compare the replicas\' contents with each other (a digest per block version)')
    .option('--wait', 'repair the disk\'s stale replicas (as \'ukai disk repair\'), and wait for it')
    .option('--json', 'print JSON')
    .action(async (disk: string | undefined, opts, cmd: Command) => {
      if ((disk === undefined) === (opts.all !== true)) throw UkaiError.badArgument('scrub needs a disk name or --all (not both)')
      await withMeta(cmd, async (meta) => {
        const names = disk !== undefined ? [disk] : (await meta.listDisks()).map(d => d.name).sort()
        const reports: Array<ScrubDiskReport & { repair?: string }> = []
        for (const name of names) {
          let r: ScrubDiskReport & { repair?: string }
          try {
            r = await scrubDisk(meta, name, { deep: opts.deep === true })
          } catch (err) {
            // --all goes on with the other disks; the exit status says one failed.
            if (disk !== undefined || !isUkaiError(err)) throw err
            process.stderr.write(`scrub of ${name} failed: ${err.message}\n`)
            process.exitCode = 1
            continue
          }
          // Also what an earlier scrub or a read marked stale: --wait leaves the disk whole.
          if (opts.wait === true) r.repair = await repair(meta, name)
          reports.push(r)
          if (opts.json !== true) process.stdout.write(formatScrub(r))
          if (r.unrepairable.length > 0 || r.diverged.length > 0 || r.unreachable.length > 0 || (r.repair !== undefined && r.repair !== 'done' && r.repair !== 'nothing-to-repair')) process.exitCode = 1
        }
        if (opts.json === true) printJson(disk !== undefined ? reports[0] : { disks: reports })
      })
    })
}

// The repair `ukai disk repair` runs; a relocation already running (the lease holder's own
// repair) is followed instead.
async function repair (meta: MetaStore, name: string): Promise<string> {
  const plan = await planRepair(meta, name)
  if (plan === null && await meta.getRelocation(name) === null) return 'nothing-to-repair'
  if (plan !== null) {
    const relocation = await planRelocation(meta, { disk: name, nodes: plan.targets, replicas: plan.targets.length, rateCapBytesPerSec: 0 })
    try {
      await startRelocation(meta, relocation, 0)
    } catch (err) {
      if (!isUkaiError(err, 'BUSY')) throw err
    }
  }
  if (await meta.getRelocation(name) === null) return 'done'
  return (await follow(meta, name, false)).state
}

function formatScrub (r: ScrubDiskReport & { repair?: string }): string {
  const lines = [`scrub${r.deep ? ' --deep' : ''} of ${r.disk}: ${plural(r.versionsChecked, 'block version')} (${formatBytes(r.bytesChecked)}) checked on ${r.nodes.join(',') || 'no node'}`]
  if (r.unreachable.length > 0) lines.push(`  not checked: ${r.unreachable.join(',')} could not be asked`)
  if (r.adopted > 0) lines.push(`  ${plural(r.adopted, 'version')} older than checksums got them`)
  lines.push(`  mismatches ${r.mismatches}, marked stale for repair ${r.markedStale}`)
  if (r.unrepairable.length > 0) lines.push(`  blocks with no good replica (not marked): ${r.unrepairable.join(',')}`)
  if (r.diverged.length > 0) lines.push(`  blocks whose replicas disagree with no majority (not marked): ${r.diverged.join(',')}`)
  if (r.repair !== undefined) lines.push(`  repair: ${r.repair}`)
  else if (r.markedStale > 0) lines.push(`  the lease holder repairs them, or run 'ukai disk repair ${r.disk}'`)
  return lines.join('\n') + '\n'
}
