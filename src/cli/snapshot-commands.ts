// ukai snapshot create | list | delete | rollback, and ukai clone
import cliProgress from 'cli-progress'
import { Command } from 'commander'
import { parseSnapshotRef, validateDiskName } from '../meta/schema'
import { cliHostName } from '../admin/admin-lease'
import { formatBytes } from '../units'
import { cloneDisk } from '../admin/clone-admin'
import { createSnapshot, deleteSnapshot, rollbackSnapshot, SNAPSHOT_COMMIT_TIMEOUT_MS_DEFAULT } from '../admin/snapshot-admin'
import { idOption, msOption } from './parse'
import { withMeta } from './context'
import { tenantOr } from './tenant-api'
import { printJson, printTable } from './output'

function flattenBar (): { update: (done: number, total: number) => void, stop: () => void } {
  let bar: cliProgress.SingleBar | null = null
  return {
    update: (done, total) => {
      if (bar === null) {
        bar = new cliProgress.SingleBar({ format: ' flattening {bar} {percentage}% | {value} of {total} blocks', noTTYOutput: true, notTTYSchedule: 2000, stream: process.stderr }, cliProgress.Presets.shades_classic)
        bar.start(Math.max(1, total), done)
      }
      bar.update(done)
    },
    stop: () => { bar?.stop(); bar = null }
  }
}

export function snapshotCommands (program: Command): void {
  const snapshot = program.command('snapshot').description('committed, immutable point-in-time copies of a disk')

  snapshot.command('create <disk@name>')
    .description('commit the disk\'s current state as snapshot NAME (O(1): a metadata change, also while a VM writes)')
    .option('--timeout-ms <ms>', 'how long to wait for the lease holder to commit', msOption('--timeout-ms'), SNAPSHOT_COMMIT_TIMEOUT_MS_DEFAULT)
    .option('--json', 'print the snapshot record as JSON')
    .action(async (ref: string, opts, cmd: Command) => {
      const { disk, snapshot: name } = parseSnapshotRef(ref)
      const rec = await tenantOr(cmd, 'CreateSnapshot', { disk, snapshot: name }, async () => await withMeta(cmd, meta => createSnapshot({ meta, host: cliHostName() }, disk, name, { timeoutMs: opts.timeoutMs as number })))
      if (opts.json === true) printJson(rec)
      else process.stdout.write(`created snapshot ${disk}@${name} (epoch ${rec.epoch})\n`)
    })

  snapshot.command('list <disk>').alias('ls')
    .description('snapshots of a disk, oldest first')
    .option('--json', 'print JSON')
    .action(async (disk: string, opts, cmd: Command) => {
      validateDiskName(disk)
      const snaps = await tenantOr(cmd, 'ListSnapshots', { disk }, async () => await withMeta(cmd, async (meta) => {
        const clones = await meta.listClones(disk)
        return (await meta.listSnapshots(disk)).map(s => ({ ...s, clones: clones.filter(c => c.parent?.snapshot === s.name).map(c => c.name) }))
      }))
      const clonesOf = (name: string): string[] => snaps.find(s => s.name === name)?.clones ?? []
      if (opts.json === true || cmd.parent?.opts().json === true) return printJson(snaps)
      printTable(['NAME', 'EPOCH', 'CREATED', 'SIZE', 'CLONES'], snaps.map(s => [
        s.name, s.epoch, new Date(s.createdAtMs).toISOString(), formatBytes(s.sizeBytes), clonesOf(s.name).join(',') || '-'
      ]))
    })

  snapshot.command('delete <disk@name>').alias('rm')
    .description('delete a snapshot; the nodes drop the block versions nothing else needs')
    .option('--flatten-clones', 'first copy into each clone of this snapshot what it still reads from it')
    .option('--json', 'print what was freed as JSON')
    .action(async (ref: string, opts, cmd: Command) => {
      const { disk, snapshot: name } = parseSnapshotRef(ref)
      const bar = flattenBar()
      let res
      try {
        res = await tenantOr(cmd, 'DeleteSnapshot', { disk, snapshot: name }, async () => await withMeta(cmd, meta => deleteSnapshot({ meta, host: cliHostName() }, disk, name, { flattenClones: opts.flattenClones === true, onFlattenProgress: bar.update })))
      } finally {
        bar.stop()
      }
      if (opts.json === true) return printJson(res)
      process.stdout.write(`deleted snapshot ${disk}@${name}; freed ${formatBytes(res.freedBytes)} (${res.versionsRemoved} block versions)${res.flattened.length > 0 ? `; flattened ${res.flattened.join(', ')}` : ''}\n`)
      if (res.unreachable.length > 0) process.stderr.write(`ukai: warning: nodes ${res.unreachable.join(', ')} were unreachable; they keep unneeded versions until the next snapshot delete\n`)
    })

  snapshot.command('rollback <disk@name>')
    .description('make the disk read as the snapshot again (refused while the disk is open)')
    .option('--destroy-newer', 'also delete the snapshots newer than this one (refused without it)')
    .action(async (ref: string, opts, cmd: Command) => {
      const { disk, snapshot: name } = parseSnapshotRef(ref)
      const res = await withMeta(cmd, meta => rollbackSnapshot({ meta, host: cliHostName() }, disk, name, { destroyNewer: opts.destroyNewer === true }))
      process.stdout.write(`rolled ${disk} back to ${name}; freed ${formatBytes(res.freedBytes)}${res.destroyed.length > 0 ? `; deleted newer snapshots ${res.destroyed.join(', ')}` : ''}\n`)
    })

  program.command('clone <disk@snapshot> <newdisk>')
    .description('a new writable disk sharing the snapshot\'s blocks until written (copy-on-write)')
    .option('--site <site>', 'place the clone\'s replicas at this site (default: where the parent is placed)', idOption('site'))
    .option('--json', 'print the new disk record as JSON')
    .action(async (ref: string, name: string, opts, cmd: Command) => {
      const from = parseSnapshotRef(ref)
      const rec = await tenantOr(cmd, 'Clone', { disk: from.disk, snapshot: from.snapshot, name, site: opts.site }, async () => await withMeta(cmd, meta => cloneDisk({ meta, host: cliHostName() }, from, name, { site: opts.site })))
      if (opts.json === true) printJson(rec)
      else process.stdout.write(`created clone ${name} of ${ref} (${formatBytes(rec.sizeBytes)})\n`)
    })
}
