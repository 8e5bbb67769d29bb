// The `ukai` command line.
import { Command, Help, Option } from 'commander'
import { configCommands } from './config-commands'
import { daemonCommands } from './daemon-commands'
import { controllerCommands } from './controller-commands'
import { devCommands } from './dev-commands'
import { diskCommands } from './disk-commands'
import { exportCommands } from './export-commands'
import { healthCommand } from './health-commands'
import { libvirtCommands } from './libvirt-commands'
import { migrationCommands } from './migration-commands'
import { nodeCommands } from './node-commands'
import { relocateCommands } from './relocate-commands'
import { scrubCommands } from './scrub-commands'
import { siteCommands } from './site-commands'
import { snapshotCommands } from './snapshot-commands'
import { topCommand } from './top'
import { zkCommands } from './zk-commands'
import { tenantCommands } from './tenant-commands'
import { exitCodeFor, reportError, wantsJson } from './output'
import { ukaiVersion } from '../package-root'
import { UkaiError } from '../errors'
import { msOption } from './parse'
import { addTlsOptions } from './tls-options'
import { caCommands } from './ca-commands'
import { ZK_CONNECT_TIMEOUT_MS_DEFAULT, ZK_SESSION_TIMEOUT_MS_DEFAULT } from '../meta/store'
import { ZK_AUTH_FILE_DEFAULT } from '../meta/credentials'

export function buildProgram (): Command {
  const program = new Command('ukai')
    .description('UKAI: location-aware virtual disks for KVM/libvirt')
    .option('--zk <connect>', 'ZooKeeper connect string (default: $UKAI_ZK or 127.0.0.1:2181)')
    .option('--zk-timeout-ms <ms>', 'how long to wait for ZooKeeper before giving up', msOption('--zk-timeout-ms'), ZK_CONNECT_TIMEOUT_MS_DEFAULT)
    .option('--zk-auth <file>', `ZooKeeper credentials file, one line user:password, mode 0600 (default: $UKAI_ZK_AUTH or ${ZK_AUTH_FILE_DEFAULT})`)
    .option('--insecure-zk', 'use ZooKeeper without credentials: znodes created are world-open (for an old cluster, or a test; logged as a warning)')
    .option('--api <host:port>', 'with a tenant\'s certificate: the tenant API to send disk, snapshot, clone and relocate verbs to (default: $UKAI_API)')
    .option('--zk-session-timeout-ms <ms>', 'daemons: how long ZooKeeper keeps a silent daemon\'s session (its liveness and leases)', msOption('--zk-session-timeout-ms'), ZK_SESSION_TIMEOUT_MS_DEFAULT)
    // Every verb inherits this: `disk create bad15 extra` is refused, not a disk named bad15.
    .allowExcessArguments(false)
    .version(ukaiVersion(), '-V, --version', 'print the version')
    .addOption(new Option('-o, --output <format>', 'json: what --json prints, for every verb that has it, and errors as JSON (on stderr); table: for people').choices(['json', 'table']).default('table'))
    // Every verb's help lists the global options too, and says which of its own are required.
    .configureHelp({
      showGlobalOptions: true,
      optionDescription: (o) => (o.mandatory ? '(required) ' : '') + Help.prototype.optionDescription.call(new Help(), o)
    })
    .showHelpAfterError()
    .exitOverride()
    .addHelpText('after', '\nSizes are binary: 512, 64K, 4M, 20G, 1T (K = KiB, G = GiB). Rates are decimal MB/s (--rate 50 = 50,000,000 bytes/s), as every display shows them.')
  // `-o json` is `--json` for the verb that runs; a verb without JSON output says so.
  program.hook('preAction', (_program, action) => {
    if (program.opts().output !== 'json') return
    if (!action.options.some(o => o.long === '--json')) throw UkaiError.badArgument(`'${action.name()}' has no JSON output (-o json)`)
    action.setOptionValue('json', true)
  })
  addTlsOptions(program)
  healthCommand(program)
  caCommands(program)
  diskCommands(program)
  nodeCommands(program)
  configCommands(program)
  siteCommands(program)
  topCommand(program)
  relocateCommands(program)
  scrubCommands(program)
  snapshotCommands(program)
  tenantCommands(program)
  exportCommands(program)
  migrationCommands(program)
  libvirtCommands(program)
  daemonCommands(program)
  controllerCommands(program)
  devCommands(program)
  zkCommands(program)
  return program
}

export async function main (): Promise<void> {
  const program = buildProgram()
  try {
    await program.parseAsync(process.argv)
  } catch (err) {
    const code = (err as { code?: string }).code
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander already printed its message (or help/version output).
      process.exit(code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help' ? 0 : 2)
    }
    reportError(err, wantsJson(process.argv))
    process.exit(exitCodeFor(err))
  }
}

if (require.main === module) main()
