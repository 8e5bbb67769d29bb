// ukai config show · config get KEY · config set KEY VALUE
import { Command } from 'commander'
import { checkSetting, getConfigValue, setConfigValue, showConfig } from '../admin/cluster-config'
import { withMeta } from './context'
import { printJson, printTable } from './output'

export function configCommands (program: Command): void {
  const config = program.command('config').description('cluster settings (kept in ZooKeeper)')
  config.command('show')
    .description('every setting, its value and whether it can be set')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const rows = await withMeta(cmd, async meta => await showConfig(meta))
      if (opts.json === true) return printJson(rows)
      printTable(['SETTING', 'VALUE', 'SETTABLE', 'WHAT'], rows.map(r => [r.key, r.value, r.settable ? 'yes' : 'no', r.describe]), { cellCharsMax: [30, 16, 8, 100] })
    })
  config.command('get <key>')
    .description('one setting\'s value')
    .option('--json', 'print JSON')
    .action(async (key: string, opts, cmd: Command) => {
      const value = await withMeta(cmd, async meta => await getConfigValue(meta, key))
      if (opts.json === true) return printJson({ key, value })
      process.stdout.write(`${value}\n`)
    })
  config.command('set <key> <value>')
    .description('change a setting (checked first: a bad value changes nothing), e.g. config set down-out-ms 600000')
    // `config set down-out-ms -5` must reach the value check, not be read as an option.
    .allowUnknownOption(true)
    .option('--json', 'print JSON')
    .action(async (key: string, raw: string, opts, cmd: Command) => {
      checkSetting(key, raw)
      const value = await withMeta(cmd, async meta => await setConfigValue(meta, key, raw))
      if (opts.json === true) return printJson({ key, value })
      process.stdout.write(`${key} = ${value}\n`)
    })
}
