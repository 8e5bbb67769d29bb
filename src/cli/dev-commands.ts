// ukai dev up | down | demo: a private local cluster for development, tests and demos.
import { insecureOf } from './tls-options'
import path from 'node:path'
import { Command } from 'commander'
import { devDown, devUp } from '../dev/cluster'
import { runDemo } from '../dev/demo'
import { startWanProxy, validateWanOptions } from '../dev/wan-proxy'
import { createLogger } from '../log'
import { printJson, printTable } from './output'
import { INSECURE_ZK_WARNING } from './context'
import { countOption, numberOption, sizeOption } from './parse'

const DEV_DIR_DEFAULT = '.ukai-dev'

// Checked like a node's --capacity, passed on as typed (the nodes parse it again).
function capacityText (text: string): string {
  sizeOption('capacity')(text)
  return text
}

export function devCommands (program: Command): void {
  const dev = program.command('dev').description('a private local cluster: ZooKeeper, storage nodes and mount agents on this machine')

  dev.command('up')
    .description('start ZooKeeper, the storage nodes and one mounted agent per site; writes DIR/cluster.json')
    .option('--dir <dir>', 'where the cluster keeps its data, logs and mounts', DEV_DIR_DEFAULT)
    .option('--sites <n>', 'number of sites', countOption('--sites'), 2)  // the range is devUp's
    .option('--nodes-per-site <n>', 'storage nodes per site', countOption('--nodes-per-site'), 2)
    .option('--capacity <size>', 'capacity of each storage node, e.g. 20G', capacityText)
    .option('--wan-latency-ms <ms>', 'one-way delay between each agent and the storage nodes of other sites (a delaying proxy per link)', numberOption('--wan-latency-ms'))
    .option('--wan-mbps <n>', 'bandwidth cap of those links in Mbit/s per direction (with --wan-latency-ms)', numberOption('--wan-mbps'))
    .option('--zk-ensemble <n>', 'run ZooKeeper as an ensemble of N members (1, 3 or 5): losing one of 3 changes nothing', countOption('--zk-ensemble'), 1)
    .option('--detach', 'return once everything runs (stop it later with `ukai dev down`)')
    .option('--json', 'print cluster.json')
    .action(async (opts, cmd: Command) => {
      const dir = path.resolve(opts.dir)
      const insecureZk = (cmd.optsWithGlobals() as { insecureZk?: boolean }).insecureZk === true
      if (insecureZk) createLogger('dev').warn(INSECURE_ZK_WARNING)
      const info = await devUp({
        insecureZk,
        zkEnsemble: opts.zkEnsemble,
        dir, sites: opts.sites, nodesPerSite: opts.nodesPerSite, capacity: opts.capacity, detach: opts.detach === true,
        wanLatencyMs: opts.wanLatencyMs, wanMbps: opts.wanMbps, insecure: insecureOf(cmd)
      })
      if (opts.json === true) printJson(info)
      else {
        const zkPids = (info.zk.members ?? [info.zk]).map(m => m.pid)
        process.stdout.write(`ZooKeeper ${info.zk.connectString} (pid${zkPids.length > 1 ? 's' : ''} ${zkPids.join(' ')})\n`)
        const metricsUrl = (address?: string): string => address === undefined ? '' : `http://${address}/metrics`
        printTable(['WHAT', 'SITE', 'WHERE', 'PID', 'METRICS'], [
          ...info.nodes.map(n => [`node ${n.id}`, n.site, n.address, n.pid, metricsUrl(n.metricsAddress)]),
          ...info.agents.map(a => [`agent ${a.host}`, a.site, a.mountPoint, a.pid, metricsUrl(a.metricsAddress)]),
          ...info.proxies.map(p => [`WAN ${p.host} → ${p.node}`, `+${p.delayMs} ms${p.mbps !== null ? `, ${p.mbps} Mbit/s` : ''}`, `${p.address} → ${p.target}`, p.pid, ''])
        ])
        process.stdout.write('each METRICS address also serves /healthz (readiness)\n')
        process.stdout.write(`export UKAI_ZK=${info.zk.connectString}\n`)
        if (info.zkAuthFile !== null) process.stdout.write(`export UKAI_ZK_AUTH=${info.zkAuthFile}   # ZooKeeper credentials for the CLI (or --zk-auth)\n`)
        if (info.tlsDir !== undefined) process.stdout.write(`export UKAI_TLS_DIR=${info.tlsDir}\n`)
        for (const a of info.agents) if (a.apiAddress !== undefined) process.stdout.write(`tenant API of ${a.host} (${a.site}): ${a.apiAddress}   # a tenant: ukai --tls-dir DIR --api ${a.apiAddress} … (ukai cert issue --tenant NAME --ca ${info.tlsDir === undefined ? 'CA' : path.join(path.dirname(info.tlsDir), 'ca')})\n`)
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

  // Hidden: what `dev up --wan-latency-ms` runs per link. Logs one "ready" line with its address.
  dev.command('wan-proxy', { hidden: true })
    .description('a delaying TCP proxy that emulates a WAN link (used by `dev up --wan-latency-ms`)')
    .requiredOption('--target <host:port>', 'where to forward to')
    .requiredOption('--delay-ms <ms>', 'one-way delay, each direction', numberOption('--delay-ms'))
    .option('--mbps <n>', 'bandwidth cap in Mbit/s, each direction', numberOption('--mbps'))
    .option('--listen <host:port>', 'where to listen', '127.0.0.1:0')
    .action(async (opts) => {
      const delayMs: number = opts.delayMs
      const mbps: number | undefined = opts.mbps
      validateWanOptions({ delayMs, mbps })
      const log = createLogger('wan-proxy')
      const proxy = await startWanProxy({ target: opts.target, delayMs, mbps, listen: opts.listen })
      let stopping = false
      const stop = (sig: string): void => {
        if (stopping) return
        stopping = true
        log.info({ signal: sig, ...proxy.stats() }, 'stopping')
        proxy.close().then(() => process.exit(0), () => process.exit(1))
      }
      process.on('SIGTERM', () => stop('SIGTERM'))
      process.on('SIGINT', () => stop('SIGINT'))
      log.info({ address: proxy.address, target: opts.target, delayMs, mbps: mbps ?? null }, 'ready')
    })

  dev.command('demo')
    .description('start a two-site dev cluster and walk through what UKAI does')
    .option('--dir <dir>', 'the cluster directory', DEV_DIR_DEFAULT)
    .action(async (opts) => { await runDemo(path.resolve(opts.dir)) })
}
