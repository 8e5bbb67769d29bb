// `ukai health [--detail] [--json]`: OK / WARN / ERR with the reasons and what to do about each
// (src/admin/health.ts). Exit status 0 for OK and WARN, 1 for ERR (also when ZooKeeper cannot be
// reached: the report then says so), so a cron job or a monitoring probe can act on it.
import { Command } from 'commander'
import { HealthReport, checkHealth, formatHealth, unreachableReport } from '../admin/health'
import { isUkaiError } from '../errors'
import { withMeta } from './context'
import { printJson } from './output'
import { ukaiVersion } from '../package-root'

export function healthCommand (program: Command): void {
  program.command('health')
    .description('is the cluster well? OK / WARN / ERR, each reason with what to do (exit status 1 on ERR)')
    .option('--detail', 'name every affected node, disk and relocation')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      let report: HealthReport
      try {
        report = await withMeta(cmd, meta => checkHealth(meta))
      } catch (err) {
        if (!isUkaiError(err, 'ZK_UNAVAILABLE')) throw err
        report = unreachableReport((err as Error).message)
      }
      if (opts.json === true) printJson({ version: ukaiVersion(), ...report })
      else process.stdout.write(formatHealth(report, opts.detail === true))
      if (report.status === 'ERR') process.exitCode = 1
    })
}
