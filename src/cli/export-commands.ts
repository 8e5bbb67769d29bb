// ukai export [--from SNAP1] DISK@SNAP FILE|-  ·  ukai import [--incremental] FILE|- DISK
// With a tenant's certificate both go through the tenant API (src/tenantapi/streams.ts): the
// agent runs the same engine and the bytes stream; flags, output and --json are the same.
import fs from 'node:fs'
import type { Readable } from 'node:stream'
import cliProgress from 'cli-progress'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { ExportFormat, ExportSummary, exportSnapshot } from '../export/export-disk'
import { ImportFormat, ImportSummary, importDisk } from '../export/import-disk'
import { parseSnapshotRef, validateSnapshotName } from '../meta/schema'
import { MetaStore } from '../meta/store'
import { cliHostName } from '../admin/admin-lease'
import { formatBytes } from '../units'
import { NodePool, withNodePool } from '../vdisk/node-pool'
import { openOutput, outputKind } from '../export/output'
import { STREAM_CHUNK_BYTES } from '../tenantapi/wire'
import { tenantApiOr } from './tenant-api'
import { withMeta } from './context'
import { printJson } from './output'
import { choiceOption, idOption, replicasOption, sizeOption } from './parse'

// Operations shorter than this show no bar.
const BAR_AFTER_BYTES = 64 * 1024 * 1024

// A bar on stderr (stdout may carry the data): bytes, rate, ETA.
function progressBar (verb: string): { start: (total: number) => void, update: (done: number) => void, stop: () => void } {
  let bar: cliProgress.SingleBar | null = null
  const startedMs = Date.now()
  const payload = (done: number, total: number): Record<string, string> => {
    const secs = (Date.now() - startedMs) / 1000
    return { done: formatBytes(done), planned: formatBytes(total), rate: formatBytes(secs > 0 ? done / secs : 0) }
  }
  let total = 0
  return {
    start: (t) => {
      total = t
      if (t < BAR_AFTER_BYTES) return
      bar = new cliProgress.SingleBar({
        format: ` ${verb} {bar} {percentage}% | {done} of {planned} | {rate}/s | ETA {eta_formatted}`,
        stream: process.stderr, noTTYOutput: true, notTTYSchedule: 2000, etaBuffer: 50
      }, cliProgress.Presets.shades_classic)
      bar.start(Math.max(1, t), 0, payload(0, t))
    },
    update: (done) => bar?.update(done, payload(done, total)),
    stop: () => bar?.stop()
  }
}

async function withPool<T> (meta: MetaStore, site: string | undefined, fn: (pool: NodePool) => Promise<T>): Promise<T> {
  return await withNodePool(meta, { host: cliHostName(), site: site ?? '' }, fn)
}

// What a tenant's CLI sends: the file's bytes, or stdin's. A missing or unreadable file is refused
// here, before the agent is asked anything.
async function inputStream (file: string): Promise<{ stream: Readable, sizeBytes: number }> {
  if (file === '-') return { stream: process.stdin, sizeBytes: 0 }
  let st: fs.Stats
  try {
    st = await fs.promises.stat(file)
  } catch (err) {
    throw UkaiError.badArgument(`cannot read input '${file}': ${(err as Error).message}`)
  }
  if (st.isDirectory()) throw UkaiError.badArgument(`input '${file}' is a directory`)
  return { stream: fs.createReadStream(file, { highWaterMark: STREAM_CHUNK_BYTES }), sizeBytes: st.isFile() ? st.size : 0 }
}

// The summary goes to stdout, unless stdout carries the data.
function report (value: ExportSummary | (ImportSummary & { appliedBytes: number }), json: boolean, dataOnStdout: boolean, line: string): void {
  if (json) {
    if (dataOnStdout) process.stderr.write(JSON.stringify(value) + '\n')
    else printJson(value)
  } else {
    (dataOnStdout ? process.stderr : process.stdout).write(line + '\n')
  }
}

export function exportCommands (program: Command): void {
  program.command('export')
    .description('write a snapshot as a raw image, or (with --from) the blocks changed since an older snapshot as a ukai stream')
    .argument('<disk@snapshot>', 'the snapshot to export')
    .argument('<file>', "output file, or '-' for stdout")
    .option('--from <snapshot>', 'incremental: only the blocks changed since this older snapshot of the same disk')
    .option('--format <raw|stream>', 'full export as a raw image (default) or as a ukai stream (keeps the snapshot name; for import into another cluster)', choiceOption('--format', ['raw', 'stream'] as const))
    .option('--site <site>', 'prefer reading from storage nodes of this site', idOption('site'))
    .option('--json', 'print a JSON summary')
    .action(async (ref: string, file: string, opts, cmd: Command) => {
      const { disk, snapshot } = parseSnapshotRef(ref)
      if (opts.from !== undefined) validateSnapshotName(opts.from)
      const format: ExportFormat = opts.format ?? (opts.from !== undefined ? 'stream' : 'raw')
      const bar = progressBar('export')
      let summary: ExportSummary
      try {
        summary = await tenantApiOr(cmd, async (api) => {
          // The agent runs the engine; its output is applied to ours (in place to a regular file).
          const positional = await outputKind(file) === 'file'
          return await api.exportTo<ExportSummary>({ disk, snapshot, from: opts.from ?? '', format, site: opts.site ?? '', positional }, async () => await openOutput(file), { onStart: bar.start, onProgress: bar.update })
        }, async () => await withMeta(cmd, meta => withPool(meta, opts.site, pool => exportSnapshot(meta, pool, {
          disk, snapshot, from: opts.from, format, output: file, onStart: bar.start, onProgress: bar.update
        }))))
      } finally {
        bar.stop()
      }
      const what = summary.kind === 'incremental' ? `blocks changed since ${summary.from}` : format === 'raw' ? 'raw image' : 'full stream'
      report(summary, opts.json === true, file === '-',
        `exported ${disk}@${snapshot} (${what}): ${summary.blocks} blocks read, ${formatBytes(summary.dataBytes)} of data, ${formatBytes(summary.outputBytes)} written to ${file === '-' ? 'stdout' : file} in ${summary.seconds.toFixed(1)} s`)
    })

  program.command('import')
    .description('create a disk from a raw image or a full ukai stream, or (--incremental) apply an incremental stream onto a disk at its base snapshot')
    .argument('<file>', "input file, or '-' for stdin (spooled to a temp file and checked before anything is applied)")
    .argument('<disk>', 'the new disk (or, with --incremental, the disk to apply onto)')
    .option('--incremental', 'apply an incremental stream onto an existing disk whose current state is the stream\'s base snapshot')
    .option('--format <auto|raw|stream>', 'input format (default: auto — a ukai stream by its magic, else a raw image)', choiceOption('--format', ['auto', 'raw', 'stream'] as const), 'auto')
    .option('--site <site>', 'new disk: place the replicas on live nodes of this site', idOption('site'))
    .option('--block-size <size>', 'new disk: block size (default: the stream\'s, or the cluster default for a raw image)', sizeOption('block size'))
    .option('--replicas <n>', 'new disk: number of replicas (default: the cluster default)', replicasOption)
    .option('--tenant <name>', "new disk: the tenant that owns it, counted against its quotas (default: 'default')", idOption('tenant name'))
    .option('--spool-dir <dir>', 'where stdin is spooled before it is checked (default: the system temp dir)')
    .option('--json', 'print a JSON summary')
    .action(async (file: string, disk: string, opts, cmd: Command) => {
      const format: ImportFormat = opts.format
      if (opts.incremental === true && (opts.site !== undefined || opts.blockSize !== undefined || opts.replicas !== undefined || opts.tenant !== undefined)) {
        throw UkaiError.badArgument('--site, --block-size, --replicas and --tenant are for a new disk; --incremental applies onto an existing one')
      }
      if (opts.incremental === true && format === 'raw') throw UkaiError.badArgument('--incremental needs a ukai stream, not --format raw')
      const bar = progressBar('import')
      // What --json reports as applied: the last count the import engine (the agent's, through the
      // tenant API) reported, never bytes merely sent.
      let appliedBytes = 0
      const applied = (n: number): void => { appliedBytes = n; bar.update(n) }
      let summary: ImportSummary
      try {
        summary = await tenantApiOr(cmd, async (api) => {
          // The agent spools, checks and applies; the bar counts what it applied, as it reports.
          if (opts.spoolDir !== undefined) throw UkaiError.badArgument('--spool-dir: through the tenant API the input is spooled on the agent, not here')
          const input = await inputStream(file)
          return await api.importFrom<ImportSummary>({
            disk, incremental: opts.incremental === true, format, site: opts.site ?? '', blockSizeBytes: opts.blockSize ?? 0,
            replicas: opts.replicas ?? 0, tenant: opts.tenant ?? '', input: file
          }, input.stream, { onStart: bar.start, onProgress: applied })
        }, async () => await withMeta(cmd, meta => withPool(meta, opts.site, pool => importDisk(meta, pool, {
          input: file, disk, incremental: opts.incremental === true, format, site: opts.site,
          blockSizeBytes: opts.blockSize, replicas: opts.replicas, tenant: opts.tenant, spoolDir: opts.spoolDir, onStart: bar.start, onProgress: applied
        }))))
      } finally {
        bar.stop()
      }
      const what = summary.kind === 'incremental' ? `applied ${summary.from} → ${summary.snapshot} onto ${disk}` : `created ${disk} (${formatBytes(summary.sizeBytes)}) from a ${summary.source === 'raw' ? 'raw image' : 'full stream'}`
      report({ ...summary, appliedBytes }, opts.json === true, false,
        `${what}: ${formatBytes(summary.dataBytes)} of data${summary.snapshot !== null ? `, snapshot ${disk}@${summary.snapshot}` : ''}, ${summary.seconds.toFixed(1)} s`)
    })
}
