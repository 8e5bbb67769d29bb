// ukai disk qos DISK [--iops N] [--mbps N] [--burst-iops N --burst-mb N | --burst SECONDS] [--clear]
// Values are checked as the command line is read (parse.ts) and their ranges by the admin code
// (src/admin/disk-qos.ts), both before anything is written. Without a change it shows the limits.
import { Command } from 'commander'
import { QOS_IOPS_MAX, validateDiskName } from '../meta/schema'
import { QOS_BURST_IOPS_MAX, formatQos, setDiskQos } from '../admin/disk-qos'
import { withMeta } from './context'
import { printJson } from './output'
import { countOption, numberOption } from './parse'

export function qosCommand (disk: Command): void {
  disk.command('qos <name>')
    .description('limit a disk\'s IOPS and MB/s (reads and writes count; every agent applies a change within a second, no remount); without options show the limits')
    .option('--iops <n>', 'operations per second, 0 for unlimited', countOption('--iops', 0, QOS_IOPS_MAX))
    .option('--mbps <n>', 'MB/s (decimal, like --rate), 0 for unlimited', numberOption('--mbps'))
    .option('--burst-iops <n>', 'operations an idle disk may do at once above the rate (default: 1 s of --iops)', countOption('--burst-iops', 1, QOS_BURST_IOPS_MAX))
    .option('--burst-mb <n>', 'MB an idle disk may move at once above the rate (default: 1 s of --mbps)', numberOption('--burst-mb'))
    .option('--burst <seconds>', 'burst as seconds of each rate (instead of --burst-iops/--burst-mb)', numberOption('--burst'))
    .option('--clear', 'lift every limit')
    .option('--json', 'print the limits as JSON (null: unlimited)')
    .action(async (name: string, opts, cmd: Command) => {
      const change = {
        clear: opts.clear === true,
        iops: opts.iops,
        bytesPerSec: opts.mbps === undefined ? undefined : Math.round(opts.mbps * 1e6),
        burstIops: opts.burstIops,
        burstBytes: opts.burstMb === undefined ? undefined : Math.round(opts.burstMb * 1e6),
        burstSeconds: opts.burst
      }
      const show = !change.clear && [change.iops, change.bytesPerSec, change.burstIops, change.burstBytes, change.burstSeconds].every(v => v === undefined)
      validateDiskName(name)
      const rec = await withMeta(cmd, async meta => show ? await meta.getDisk(name) : await setDiskQos(meta, name, change))
      if (opts.json === true) return printJson(rec.qos ?? null)
      process.stdout.write(`disk ${name}: ${formatQos(rec.qos)}\n`)
    })
}
