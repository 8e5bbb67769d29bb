// ukai controller [run]: a standalone controller candidate (daemon); ukai controller status: who
// leads, since when, the standbys, and what each duty of the leader is doing.
import os from 'node:os'
import path from 'node:path'
import { Command } from 'commander'
import { REPAIR_BUSY_RTT_MS_DEFAULT } from '../controller/busy-nodes'
import { REPAIR_SWEEP_INTERVAL_MS } from '../controller/repair-duty'
import { SCRUB_FINDINGS_INTERVAL_MS } from '../controller/scrub-findings'
import { runControllerDaemon } from '../daemons/controller'
import { sdNotify } from '../daemons/sd-notify'
import { createLogger } from '../log'
import { readControllerState } from '../meta/election'
import { ControllerLeader } from '../meta/schema'
import { withMeta, zkAuth, zkConnectString, zkConnectTimeoutMs, zkSessionTimeoutMs } from './context'
import { stopOnSignals } from './daemon-commands'
import { printJson, printTable } from './output'
import { idOption, msOption, rateOption } from './parse'
import { daemonTls } from './tls-options'

export function controllerCommands (program: Command): void {
  const controller = program.command('controller')
    .description('the cluster\'s controller: runs relocations and repairs nobody else runs (elected; agents stand too)')
  controller.command('run', { isDefault: true })
    .description('run a standalone controller candidate (the default: `ukai controller --zk …`)')
    .option('--host <name>', 'host name this candidate reports', idOption('host name'), os.hostname())
    .option('--pid-file <file>', 'write the daemon\'s pid to FILE (removed on a clean stop)')
    .option('--repair-interval-ms <ms>', 'how often every disk is checked for stale replicas (also whenever a node comes back)', msOption('--repair-interval-ms', 100), REPAIR_SWEEP_INTERVAL_MS)
    .option('--scrub-findings-interval-ms <ms>', 'how often the storage nodes are asked what their background scrub found (bad replicas are marked stale and repaired)', msOption('--scrub-findings-interval-ms', 100), SCRUB_FINDINGS_INTERVAL_MS)
    .option('--repair-busy-rtt-ms <ms>', 'do not start a repair while a node it would use, and no agent writes to, answers the nearest agent\'s pings this slowly (0: pings never hold a repair back; a node agents write to is judged by their write p99, as the copy pace does)', msOption('--repair-busy-rtt-ms', 0), REPAIR_BUSY_RTT_MS_DEFAULT)
    .option('--repair-rate <MB/s>', 'cap the copy rate of each automatic repair (default: unlimited)', rateOption)
    .action(async (opts, cmd: Command) => {
      const log = createLogger('controller').child({ host: opts.host })
      const pidFile = opts.pidFile === undefined ? undefined : path.resolve(opts.pidFile as string)
      // The runs it takes over copy, fence and drop replicas as an agent's would: it talks to the
      // nodes with an agent certificate of its host name (`ukai cert issue --agent HOST`).
      daemonTls(cmd, 'agent', opts.host)?.revoked.close()  // checked only: it serves no TLS peer
      const c = await runControllerDaemon({
        host: opts.host, zk: zkConnectString(cmd), zkAuth: zkAuth(cmd, (m) => log.warn(m)), zkSessionTimeoutMs: zkSessionTimeoutMs(cmd), zkConnectTimeoutMs: zkConnectTimeoutMs(cmd), pidFile,
        duties: { repair: { intervalMs: opts.repairIntervalMs, rateBytesPerSec: opts.repairRate, busyRttMs: opts.repairBusyRttMs }, scrubFindings: { intervalMs: opts.scrubFindingsIntervalMs } }, logger: log
      })
      stopOnSignals(log, async () => { sdNotify({ stopping: true, status: 'leaving the election' }); await c.close() })
      sdNotify({ ready: true, status: c.controller.isLeader ? 'leading' : 'standing by' })
      log.info({ pid: process.pid, pidFile, leader: c.controller.isLeader }, 'ready')
    })
  controller.command('status')
    .description('who leads the controller, since when, the standbys, and what the leader\'s duties do')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const state = await withMeta(cmd, async meta => await readControllerState(meta))
      if (opts.json === true) { printJson(state); return }
      process.stdout.write(formatLeader(state.leader))
      if (state.candidates.length > 0) {
        printTable(['CANDIDATE', 'HOST', 'KIND', 'PID', 'STARTED'], state.candidates.map((c, i) => [i === 0 ? 'leader' : `standby ${i}`, c.host, c.kind, c.pid, new Date(c.startedAtMs).toISOString()]))
      }
      if (state.leader !== null && state.leader.duties.length > 0) {
        printTable(['DUTY', 'STATE', 'DETAIL'], state.leader.duties.map(d => [d.name, d.state, JSON.stringify(d.detail ?? {})]), { cellCharsMax: [0, 0, 120] })
      }
    })
}

function formatLeader (l: ControllerLeader | null): string {
  if (l === null) return 'no controller leads: start `ukai mount` (agents stand by default) or `ukai controller --zk …`\n'
  const forSec = Math.round((Date.now() - l.leaderSinceMs) / 1000)
  return `controller leader: ${l.host} (${l.kind}, pid ${l.pid}) since ${new Date(l.leaderSinceMs).toISOString()} (${forSec} s)\n`
}
