// ukai dev up | down | demo: a private local cluster for development, tests and demos.
import path from 'node:path'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { devDown, devUp } from '../dev/cluster'
import { runDemo } from '../dev/demo'
import { printJson, printTable } from './output'

const DEV_DIR_DEFAULT = '.ukai-dev'

function count (text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw UkaiError.badArgument(`bad ${what} '${text}': expected a whole number`)
  return Number(text)
}

export function devCommands (program: Command): void {
  const dev = program.command('dev').description('a private local cluster: ZooKeeper, storage nodes and mount agents on this machine')

  dev.command('up')
    .description('start ZooKeeper, the storage nodes and one mounted agent per site; writes DIR/cluster.json')
    .option('--dir <dir>', 'where the cluster keeps its data, logs and mounts', DEV_DIR_DEFAULT)
    .option('--sites <n>', 'number of sites', '2')
    .option('--nodes-per-site <n>', 'storage nodes per site', '2')
    .option('--capacity <size>', 'capacity of each storage node, e.g. 20G')
    .option('--detach', 'return once everything runs (stop it later with `ukai dev down`)')
    .option('--json', 'print cluster.json')
    .action(async (opts) => {
      const dir = path.resolve(opts.dir)
      const info = await devUp({ dir, sites: count(opts.sites, 'site count'), nodesPerSite: count(opts.nodesPerSite, 'nodes per site'), capacity: opts.capacity, detach: opts.detach === true })
      if (opts.json === true) printJson(info)
      else {
        process.stdout.write(`ZooKeeper ${info.zk.connectString} (pid ${info.zk.pid})\n`)
        printTable(['WHAT', 'SITE', 'WHERE', 'PID'], [
          ...info.nodes.map(n => [`node ${n.id}`, n.site, n.address, n.pid]),
          ...info.agents.map(a => [`agent ${a.host}`, a.site, a.mountPoint, a.pid])
        ])
        process.stdout.write(`export UKAI_ZK=${info.zk.connectString}\n`)
      }
      if (opts.detach === true) return
      process.stdout.write('running; Ctrl-C stops the cluster\n')
      await new Promise<void>((resolve) => {
        const stop = (): void => { devDown({ dir }).then(() => resolve(), () => resolve()) }
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
      })
    })

  dev.command('down')
    .description('stop exactly what `ukai dev up` started in DIR, and unmount')
    .option('--dir <dir>', 'the cluster directory', DEV_DIR_DEFAULT)
    .action(async (opts) => {
      const res = await devDown({ dir: path.resolve(opts.dir) })
      if (!res.found && res.unmounted.length === 0) process.stdout.write(`no dev cluster in ${path.resolve(opts.dir)}\n`)
      for (const s of res.stopped) process.stdout.write(`${s.what} (pid ${s.pid}): ${s.result}\n`)
      for (const m of res.unmounted) process.stdout.write(`unmounted ${m}\n`)
    })

  dev.command('demo')
    .description('start a two-site dev cluster and walk through what UKAI does')
    .option('--dir <dir>', 'the cluster directory', DEV_DIR_DEFAULT)
    .action(async (opts) => { await runDemo(path.resolve(opts.dir)) })
}
