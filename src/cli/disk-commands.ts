// ukai disk create | list | info | resize | delete (| repair, qos: their own files)
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { formatBytes, plural } from '../units'
import { createDisk, deleteDisk, resizeDisk } from '../admin/disk-admin'
import { summarizeDisk } from '../admin/disk-summary'
import { formatQos } from '../admin/disk-qos'
import { DiskState, diskHealth } from '../admin/health'
import { usedBytesOnce } from '../admin/used-bytes'
import { DiskRecord } from '../meta/schema'
import { withMeta } from './context'
import { tenantOr } from './tenant-api'
import { printJson, printTable } from './output'
import { idOption, nodeListOption, replicasOption, sizeOption } from './parse'
import { repairCommand } from './relocate-commands'
import { qosCommand } from './disk-qos-command'

export function diskCommands (program: Command): void {
  const disk = program.command('disk').description('create, inspect, grow and delete disks')

  disk.command('create <name>')
    .description('create a thin disk (a metadata write: nothing is allocated until written)')
    .requiredOption('--size <size>', 'disk size, e.g. 20G', sizeOption('size'))
    .option('--block-size <size>', 'block size, a power of two from 64K to 64M (default: the cluster default, 4M)', sizeOption('block size'))
    .option('--replicas <n>', 'number of replicas (default: the cluster default, 2)', replicasOption)
    .option('--site <site>', 'place the replicas on live nodes of this site', idOption('site'))
    .option('--nodes <a,b>', 'place the replicas on exactly these nodes', nodeListOption)
    .option('--tenant <name>', "the tenant that owns it, counted against its quotas (default: 'default'; see 'ukai tenant')", idOption('tenant name'))
    .option('--json', 'print the disk record as JSON')
    .action(async (name: string, opts, cmd: Command) => {
      if (opts.site !== undefined && opts.nodes !== undefined) throw UkaiError.badArgument('give either --site or --nodes, not both')
      const rec = await tenantOr(cmd, 'CreateDisk', { name, sizeBytes: opts.size, blockSizeBytes: opts.blockSize, replicas: opts.replicas, site: opts.site, tenant: opts.tenant }, async () => await withMeta(cmd, meta => createDisk(meta, {
        name,
        sizeBytes: opts.size,
        blockSizeBytes: opts.blockSize,
        replicas: opts.replicas,
        site: opts.site,
        nodes: opts.nodes,
        tenant: opts.tenant
      })))
      if (opts.json === true) printJson(rec)
      else process.stdout.write(`created disk ${rec.name} (${formatBytes(rec.sizeBytes)}, ${rec.replicas} replicas, ${formatBytes(rec.blockSizeBytes)} blocks)\n`)
    })

  disk.command('list').alias('ls')
    .description('list disks, each with its state (healthy, relocating, relocation-paused, stale, degraded, unavailable)')
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const disks = await tenantOr(cmd, 'ListDisks', {}, async () => await withMeta(cmd, async (meta) => {
        const nodes = await meta.listNodes()
        const out: Array<DiskRecord & { state: DiskState, usedBytes: number | null }> = []
        for (const d of await meta.listDisks()) out.push({ ...d, state: (await diskHealth(meta, d, nodes)).state, usedBytes: await usedBytesOnce(meta, d, nodes) })
        return out
      }))
      if (opts.json === true) return printJson(disks)
      printTable(['NAME', 'TENANT', 'STATE', 'SIZE', 'USED', 'BLOCK', 'REPLICAS', 'PLACEMENT', 'UUID'], disks.map(d => [
        d.name, d.tenant, d.state, formatBytes(d.sizeBytes), d.usedBytes === null ? '?' : formatBytes(d.usedBytes), formatBytes(d.blockSizeBytes), d.replicas,
        d.placement.nodes?.join(',') ?? (d.placement.site !== undefined ? `site ${d.placement.site}` : 'any'), d.uuid
      ]))
    })

  disk.command('info <name>')
    .description('size, blocks, replicas per site, stale blocks, lease holder, file owner, xattrs and qos')
    .option('--json', 'print JSON')
    .action(async (name: string, opts, cmd: Command) => {
      const s = await tenantOr(cmd, 'DiskInfo', { disk: name }, async () => await withMeta(cmd, meta => summarizeDisk(meta, name)))
      if (opts.json === true) return printJson(s)
      const lines = [
        ['name', s.name], ['uuid', s.uuid], ['tenant', s.tenant], ['size', `${formatBytes(s.sizeBytes)} (${s.sizeBytes} bytes)`],
        ['used', s.usedBytes === null ? '? (no in-sync replica answered)' : `${formatBytes(s.usedBytes)} (${s.usedBytes} bytes; written blocks × block size, one replica)`],
        ['block size', formatBytes(s.blockSizeBytes)], ['blocks', String(s.blocks)], ['replicas', String(s.replicas)],
        ['blocks per site', Object.entries(s.blocksPerSite).map(([site, n]) => `${site}: ${n}`).join(', ') || '-'],
        ['stale blocks', String(s.staleBlocks)],
        ['below replicas', s.belowReplicaBlocks === 0 ? `0 (every block has ${plural(s.replicas, 'in-sync replica')})`
          : `${plural(s.belowReplicaBlocks, 'block')} below their replica count of ${s.replicas}: run 'ukai disk repair ${s.name}'`],
        ['lease holder', s.leaseHolder === null ? '-' : `${s.leaseHolder} (epoch ${s.leaseEpoch})`],
        ['open on', s.openOn.join(', ') || '-'],
        ['metadata', formatBytes(s.metadataBytes)],
        ['epoch', String(s.epoch)],
        ['parent', s.parent === null ? '-' : `${s.parent.disk}@${s.parent.snapshot} (clone)`],
        ['snapshots', `${s.snapshots}${s.snapshots > 0 ? `, ${s.snapshotBytes === null ? '? (a node did not answer)' : formatBytes(s.snapshotBytes)} in versions older than the head` : ''}`],
        ['file owner', s.file === null ? "the agent's user, mode 0660 (never chowned)" : `uid ${s.file.uid}, gid ${s.file.gid}, mode 0${s.file.mode.toString(8)}`],
        ['xattrs', s.xattrs.join(', ') || '-'],
        ['qos', formatQos(s.qos)],
        ['scrub', s.scrub === null ? "never ('ukai scrub " + s.name + "')"
          : `${new Date(s.scrub.lastScrubMs).toISOString()}${s.scrub.deep ? ' (deep)' : ''}: ${s.scrub.mismatches} bad, ${s.scrub.markedStale} marked stale for repair; ${s.scrub.mismatchesTotal} bad in ${plural(s.scrub.runs, 'run')}`]
      ]
      for (const [k, v] of lines) process.stdout.write(`${k.padEnd(18)} ${v}\n`)
      process.stdout.write('replicas per node:\n')
      printTable(['NODE', 'SITE', 'NODE STATE', 'IN-SYNC', 'SYNCING', 'STALE'], Object.entries(s.replicasPerNode).sort((a, b) => a[0].localeCompare(b[0])).map(([id, c]) => [
        id, c.site, c.state, c.inSync, c.syncing, c.stale
      ]), { cellCharsMax: 32 })
    })

  disk.command('resize <name>')
    .description('grow a disk (shrinking is refused: it would drop data)')
    .requiredOption('--size <size>', 'new size, e.g. 40G', sizeOption('size'))
    .action(async (name: string, opts, cmd: Command) => {
      const rec = await tenantOr(cmd, 'ResizeDisk', { disk: name, sizeBytes: opts.size }, async () => await withMeta(cmd, meta => resizeDisk(meta, name, opts.size)))
      process.stdout.write(`disk ${name} is now ${formatBytes(rec.sizeBytes)}\n`)
    })

  disk.command('delete <name>').alias('rm')
    .description('delete a disk that no one has open, and its blocks on the storage nodes')
    .option('--with-snapshots', 'also delete its snapshots (refused without it when it has any; a disk with clones is never deleted)')
    .action(async (name: string, opts, cmd: Command) => {
      const res = await tenantOr(cmd, 'DeleteDisk', { disk: name, withSnapshots: opts.withSnapshots === true }, async () => await withMeta(cmd, meta => deleteDisk(meta, name, { withSnapshots: opts.withSnapshots === true })))
      process.stdout.write(`deleted disk ${name}\n`)
      if (res.orphanedOn.length > 0) process.stderr.write(`ukai: warning: nodes ${res.orphanedOn.join(', ')} were unreachable; their copies of the blocks remain until cleaned\n`)
    })

  repairCommand(disk)
  qosCommand(disk)
}
