// ukai storagenode | mount: long-running daemons (ukai controller: cli/controller-commands.ts).
// Each logs JSON lines and a final "ready" line once it serves; SIGTERM/SIGINT stop it gracefully.
import os from 'node:os'
import { Command, Option } from 'commander'
import { checkMountOptions } from '../agent/fuse-adapter'
import { RTT_INTERVAL_MS_DEFAULT } from '../agent/rtt-monitor'
import { runMount } from '../daemons/mount'
import { sdNotify } from '../daemons/sd-notify'
import { runStorageNode } from '../daemons/storage-node'
import { UkaiError } from '../errors'
import { HEAP_GROWING_PERCENT_AGENT_DEFAULT } from '../lib/gc-ballast'
import { parseHostPort } from '../lib/host-port'
import { createLogger, Logger } from '../log'
import { LEASE_HANDOVER_TIMEOUT_MS_DEFAULT } from '../meta/lease'
import { AgentMetrics } from '../metrics/agent-metrics'
import { MetricsEndpoint } from '../metrics/endpoint'
import { MetricsListen, checkMetricsListen } from '../metrics/listen-address'
import { NodeMetrics } from '../metrics/node-metrics'
import { REPLICA_HUNG_MS_DEFAULT, REPLICA_HUNG_MS_MIN } from '../storagenode/client'
import { SCRUB_INTERVAL_MS_DEFAULT, SCRUB_MBPS_DEFAULT } from '../storagenode/scrub'
import { LOCAL_OPEN_FILES_MAX_DEFAULT } from '../vdisk/short-circuit-reads'
import { FLUSH_BEHIND_IDLE_MS_DEFAULT, IO_RETRY_MS_DEFAULT } from '../vdisk/virtual-disk'
import { addressMap, collect, zkAuth, zkConnectString, zkConnectTimeoutMs, zkSessionTimeoutMs } from './context'
import { countOption, hostPortOption, idOption, msOption, rateOption, sizeOption } from './parse'
import { daemonTls } from './tls-options'

export function stopOnSignals (log: Logger, stop: () => Promise<void>): void {
  let signalled = false
  const onSignal = (sig: string): void => {
    if (signalled) return
    signalled = true
    log.info({ signal: sig }, 'stopping')
    stop().then(() => { log.info('stopped'); process.exit(0) }, (err) => { log.error({ err: String(err) }, 'stop failed'); process.exit(1) })
  }
  process.on('SIGTERM', () => onSignal('SIGTERM'))
  process.on('SIGINT', () => onSignal('SIGINT'))
}

// Hidden: a benchmark switch (bench/ab-cost.ts measures checksums on vs off with it), not
// an operator's option. Versions written with it have no checksums ("unverified", as versions
// older than checksums); `ukai dev up` and the demo never pass it.
const BENCH_NO_CHECKSUMS_HELP = 'benchmark only: no checksums (nodes write no sums, nothing is verified, no scrub)'
const METRICS_LISTEN_HELP = 'serve Prometheus metrics (/metrics) and readiness (/healthz) on HOST:PORT (default: off; loopback only unless --metrics-listen-any)'
const METRICS_LISTEN_ANY_HELP = 'let --metrics-listen serve on a non-loopback address (the endpoint has no authentication)'

// --metrics-listen and --metrics-listen-any, checked before anything starts (a bad value: exit 2).
function metricsListenOf (opts: { metricsListen?: string, metricsListenAny?: boolean }): MetricsListen | undefined {
  if (opts.metricsListen === undefined) {
    if (opts.metricsListenAny === true) throw UkaiError.badArgument('--metrics-listen-any needs --metrics-listen')
    return undefined
  }
  return checkMetricsListen(opts.metricsListen, opts.metricsListenAny === true)
}

// Serves the metrics from before the daemon starts (a scrape then says "starting") until after
// it stopped; a daemon that fails to start closes it again. `close` closes the daemon, then the
// endpoint. systemd (Type=notify) hears READY once the daemon serves and STOPPING when it drains.
async function runWithMetrics<D extends { close: () => Promise<void> }> (
  listen: MetricsListen | undefined, metrics: AgentMetrics | NodeMetrics | undefined, log: Logger, start: () => Promise<D>
): Promise<{ daemon: D, close: () => Promise<void>, metricsAddress?: string }> {
  const endpoint = listen === undefined || metrics === undefined ? null : await MetricsEndpoint.start({ listen, registry: metrics.registry, notReady: () => metrics.notReady(), logger: log })
  let daemon: D
  try {
    daemon = await start()
  } catch (err) {
    metrics?.close()
    await endpoint?.close()
    throw err
  }
  metrics?.setReady()
  sdNotify({ ready: true, status: 'serving' })
  const close = async (): Promise<void> => {
    metrics?.setStopping()  // /healthz says 503 from the first step of the shutdown
    sdNotify({ stopping: true, status: 'draining' })
    await daemon.close()
    metrics?.close()
    await endpoint?.close()
  }
  return { daemon, close, metricsAddress: endpoint?.address }
}

export function daemonCommands (program: Command): void {
  program.command('storagenode')
    .description('run a storage node: serves block versions over gRPC and registers in ZooKeeper')
    .requiredOption('--id <id>', 'node id, unique in the cluster', idOption('node id'))
    .requiredOption('--site <site>', 'site (data centre) label', idOption('site'))
    .requiredOption('--data-dir <dir>', 'where block versions are stored')
    .option('--listen <host:port>', 'address to serve on', hostPortOption('--listen'), '127.0.0.1:7300')
    .option('--host <name>', 'host name reported to the cluster', idOption('host name'), os.hostname())
    .option('--capacity <size>', 'cap the bytes this node stores (default: the file system\'s free space)', sizeOption('capacity'))
    .option('--peer-address <id=host:port>', 'reach storage node ID at HOST:PORT for node-to-node copies instead of its registered address (repeatable; e.g. a WAN proxy)', collect)
    .option('--scrub-mbps <MB/s>', `rate of the background scrub that re-checks stored blocks against their checksums; 0: off (default ${SCRUB_MBPS_DEFAULT})`, scrubRateOption)
    .option('--scrub-interval-ms <ms>', 'how often the background scrub starts a pass over every stored block (default: a day)', msOption('--scrub-interval-ms', 1000), SCRUB_INTERVAL_MS_DEFAULT)
    .option('--metrics-listen <host:port>', METRICS_LISTEN_HELP)
    .option('--metrics-listen-any', METRICS_LISTEN_ANY_HELP)
    .addOption(new Option('--bench-no-checksums', BENCH_NO_CHECKSUMS_HELP).hideHelp())
    .action(async (opts, cmd: Command) => {
      const peerAddresses = addressMap(opts.peerAddress, '--peer-address')
      const metricsListen = metricsListenOf(opts)
      const log = createLogger('storagenode').child({ node: opts.id, site: opts.site })
      const metrics = metricsListen === undefined ? undefined : new NodeMetrics(opts.id)
      const node = await runWithMetrics(metricsListen, metrics, log, async () => await runStorageNode({
        id: opts.id, site: opts.site, dataDir: opts.dataDir, listen: opts.listen, host: opts.host,
        // The credentials file, then the certificate, are checked after the arguments and the
        // metrics port (their errors first).
        zk: zkConnectString(cmd), zkAuth: zkAuth(cmd, (m) => log.warn(m)),
        capacityBytes: opts.capacity, peerAddresses, metrics, scrub: { bytesPerSecMax: opts.scrubMbps, intervalMs: opts.scrubIntervalMs }, checksums: opts.benchNoChecksums !== true, tls: daemonTls(cmd, 'node', opts.id, log) ?? undefined,  // null: --insecure (warned at start)
        zkSessionTimeoutMs: zkSessionTimeoutMs(cmd), zkConnectTimeoutMs: zkConnectTimeoutMs(cmd), logger: log
      }))
      stopOnSignals(log, node.close)
      log.info({ address: node.daemon.address, metricsAddress: node.metricsAddress }, 'ready')
    })

  program.command('mount <mountpoint>')
    .description('run the hypervisor agent: every disk of the cluster as a file under MOUNTPOINT')
    .requiredOption('--site <site>', 'site (data centre) label of this hypervisor', idOption('site'))
    .option('--host <name>', 'host name of this hypervisor', idOption('host name'), os.hostname())
    .option('--allow-other', 'let other users (e.g. libvirt-qemu) open the disks')
    .option('--handover-timeout-ms <ms>', 'how long to wait for a lease holder to hand over before forcing', msOption('--handover-timeout-ms'), LEASE_HANDOVER_TIMEOUT_MS_DEFAULT)
    .option('--io-retry-ms <ms>', 'how long an I/O waits for an unreachable replica to return before failing with EIO', msOption('--io-retry-ms', 0), IO_RETRY_MS_DEFAULT)
    .option('--flush-behind-ms <ms>', 'make written blocks durable on the replicas in the background once a disk saw no write this long (and at least every second), so an fsync (and a live migration\'s stop) finds little left to do; 0: only when the guest flushes', msOption('--flush-behind-ms', 0), FLUSH_BEHIND_IDLE_MS_DEFAULT)
    .option('--replica-hung-ms <ms>', `a replica that answers nothing (not even a ping) this long while I/O waits on it is hung: its pending I/O fails, it is marked stale and left behind (at least ${REPLICA_HUNG_MS_MIN})`, msOption('--replica-hung-ms', REPLICA_HUNG_MS_MIN), REPLICA_HUNG_MS_DEFAULT)
    .option('--node-address <id=host:port>', 'reach storage node ID at HOST:PORT from this host instead of its registered address (repeatable; e.g. a WAN proxy)', collect)
    .option('--rtt-interval-ms <ms>', 'how often round trips to the storage nodes are measured', msOption('--rtt-interval-ms', 100), RTT_INTERVAL_MS_DEFAULT)
    .option('--cache-dir <dir>', 'keep a local cache of committed blocks (snapshot and clone-parent reads) in DIR')
    .option('--cache-size <size>', 'bound of the committed-block cache (default 1G)', sizeOption('cache size'))
    .option('--no-local-reads', 'always read over gRPC, also from storage nodes on this host (default: read their block files directly)')
    .option('--no-controller', 'do not stand in the controller election (default: every agent is a candidate; see ukai controller status)')
    .option('--no-auto-repair', 'do not replace a full node\'s stale replicas on another node by itself (default: the agent holding the lease starts that repair)')
    .option('--nbd-dir <dir>', 'also serve every disk over NBD: a Unix socket DIR/<disk>.sock per disk (export name: the disk, or DISK@SNAP read-only)')
    .option('--nbd-listen <host:port>', 'also serve NBD on this TCP address (export name = disk name, or DISK@SNAP read-only); no TLS: keep it on loopback', hostPortOption('--nbd-listen'))
    .option('--api-listen <host:port>', 'serve the tenant API here (mutual TLS with this agent\'s certificate): tenants\' certificates manage their own disks through it (docs/security.md); default off', hostPortOption('--api-listen'))
    .option('--local-read-files <n>', 'block files of this host\'s storage nodes kept open for local reads', countOption('--local-read-files'), LOCAL_OPEN_FILES_MAX_DEFAULT)
    .option('--heap-growing-percent <n>', 'after each full collection, let the agent\'s V8 heap grow by N % of its live size before the next (bounds the peak RSS under load; docs/performance.md); 0: V8\'s own factor, 10–300 %', countOption('--heap-growing-percent', 0, 1000), HEAP_GROWING_PERCENT_AGENT_DEFAULT)
    .option('--metrics-listen <host:port>', METRICS_LISTEN_HELP)
    .option('--metrics-listen-any', METRICS_LISTEN_ANY_HELP)
    .addOption(new Option('--bench-no-checksums', BENCH_NO_CHECKSUMS_HELP).hideHelp())
    .action(async (mountPoint: string, opts, cmd: Command) => {
      checkMountOptions({ allowOther: opts.allowOther === true })  // before credentials: the first thing wrong is said first
      const nodeAddresses = addressMap(opts.nodeAddress, '--node-address')
      const metricsListen = metricsListenOf(opts)
      const rttIntervalMs: number = opts.rttIntervalMs
      if (opts.cacheSize !== undefined && opts.cacheDir === undefined) throw UkaiError.badArgument('--cache-size needs --cache-dir')
      const localReadFiles: number = opts.localReadFiles
      const cacheSizeBytes: number | undefined = opts.cacheSize
      const log = createLogger('mount').child({ host: opts.host, site: opts.site })
      const metrics = metricsListen === undefined ? undefined : new AgentMetrics(opts.host)
      const m = await runWithMetrics(metricsListen, metrics, log, async () => {
        // Checked here, the credentials file first: the arguments' and the metrics port's errors come before.
        const auth = zkAuth(cmd, (m) => log.warn(m))
        const tls = daemonTls(cmd, 'agent', opts.host, log)
        if (opts.apiListen === undefined) tls?.revoked.close()  // it accepts no TLS peer: nothing to check
        return await runMount({
          mountPoint, host: opts.host, site: opts.site, zk: zkConnectString(cmd), zkAuth: auth, zkSessionTimeoutMs: zkSessionTimeoutMs(cmd), zkConnectTimeoutMs: zkConnectTimeoutMs(cmd), allowOther: opts.allowOther === true,
          handoverTimeoutMs: opts.handoverTimeoutMs, ioRetryMs: opts.ioRetryMs, flushBehindMs: opts.flushBehindMs, replicaHungMs: opts.replicaHungMs, nodeAddresses, rttIntervalMs, cacheDir: opts.cacheDir, cacheSizeBytes, localReads: opts.localReads !== false, localReadFiles, heapGrowingPercent: opts.heapGrowingPercent, benchNoChecksums: opts.benchNoChecksums === true, autoRepair: opts.autoRepair !== false, controller: opts.controller !== false,
          nbdDir: opts.nbdDir, nbdListen: opts.nbdListen === undefined ? undefined : parseHostPort(opts.nbdListen, '--nbd-listen'), metrics, logger: log,
          ...(opts.apiListen !== undefined ? { api: { listen: opts.apiListen, tls } } : {})
        })
      })
      stopOnSignals(log, m.close)
      log.info({ mountPoint, nbdDir: opts.nbdDir, nbdAddress: m.daemon.nbd?.tcpAddress ?? undefined, apiPort: m.daemon.api?.port, metricsAddress: m.metricsAddress, heapGrowingPercent: opts.heapGrowingPercent }, 'ready')
    })
}

// `--scrub-mbps`: MB/s as --rate takes it, or 0 (off).
function scrubRateOption (text: string): number {
  return text.trim() === '0' ? 0 : rateOption(text)
}
