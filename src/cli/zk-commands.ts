// ukai zk secure: the migration of a cluster that ran without ZooKeeper credentials (issue 12).
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { secureAllZnodes } from '../meta/acl'
import { withMeta } from './context'
import { printJson } from './output'

export function zkCommands (program: Command): void {
  const zk = program.command('zk').description('ZooKeeper housekeeping')
  zk.command('secure')
    .description('put the ACL of --zk-auth (ALL for its user, nothing for anyone else) on every znode under /ukai; run once every daemon runs with the credentials file (docs/security.md)')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      if ((cmd.optsWithGlobals() as { insecureZk?: boolean }).insecureZk === true) throw UkaiError.badArgument('zk secure needs credentials (--zk-auth FILE or UKAI_ZK_AUTH), not --insecure-zk')
      const res = await withMeta(cmd, async meta => await secureAllZnodes(meta))
      if (opts.json === true) { printJson(res); return }
      process.stdout.write(`secured ${res.secured} znodes (${res.alreadySecure} already had the ACL${res.vanished > 0 ? `, ${res.vanished} vanished during the walk` : ''})\n`)
    })
}
