// The libvirt QEMU hook: `qemu DOMAIN OPERATION SUB-OPERATION EXTRA`, domain XML on stdin
// (libvirt's docs/hooks.rst). What UKAI does per call:
//
//   migrate begin   (destination, first call of an incoming migration; XML = the incoming definition)
//   prepare begin   (before a start, also on the destination of a migration)
//   restore begin   (before a saved image is restored)
//       → start relocating the domain's UKAI disks toward this host's site. Only the record is
//         written; the lease holder's agent copies in the background. Already there or already on
//         its way: nothing to do.
//   release end     (after the QEMU process is gone: a stop, or the source after a migration)
//       → finish on the source side: this host lets the lease go (see relocate/migration.ts).
//   anything else   → logged, nothing done.
//
// It never makes libvirt fail a start or a migration: every outcome — no UKAI disk, ZooKeeper
// unreachable, a disk that cannot move, malformed XML — is logged and the hook exits 0. For
// migrate/restore libvirt reads stdout as a replacement XML; empty output keeps the input, so the
// hook prints nothing on stdout, ever. The caller enforces the time budget (a hard deadline).
import { Logger } from '../log'
import { MetaStore } from '../meta/store'
import { readZkAuthFile, type ZkAuth } from '../meta/credentials'
import { finishDiskMigration, prepareDiskToward, siteOfHost } from '../relocate/migration'
import { parseDomain, ukaiDisks, type UkaiDiskRef } from './domain'
import { HookConfig, hookMountPoints } from './hook-config'

export type HookRole = 'toward-here' | 'finish' | 'none'

export function roleOf (operation: string, subOperation: string): HookRole {
  if ((operation === 'migrate' || operation === 'prepare' || operation === 'restore') && subOperation === 'begin') return 'toward-here'
  if (operation === 'release' && subOperation === 'end') return 'finish'
  return 'none'
}

export interface HookCall { domain: string, operation: string, subOperation: string, extra: string, xml: string }

export interface HookDeps {
  config: HookConfig
  log: Logger
  deadlineMs: number  // Date.now() value by which everything must be done
}

// How long the source waits for its agent to flush and release a lease it still holds.
const RELEASE_WAIT_MS_MAX = 2000

export async function runHook (call: HookCall, deps: HookDeps): Promise<void> {
  const { config, log } = deps
  const role = roleOf(call.operation, call.subOperation)
  const base = { domain: call.domain, op: call.operation, subOp: call.subOperation, extra: call.extra, role }
  if (role === 'none') { log.info(base, 'hook called: nothing to do for this operation'); return }

  let disks: UkaiDiskRef[]
  try {
    disks = ukaiDisks(parseDomain(call.xml), hookMountPoints(config), config.nbdDirs)
  } catch (err) {
    log.error({ ...base, err: (err as Error).message }, 'hook called with a domain definition it cannot read; doing nothing')
    return
  }
  if (disks.length === 0) { log.info(base, 'hook called: the domain has no disk on a UKAI mount or NBD socket'); return }
  log.info({ ...base, disks: disks.map(d => d.disk) }, 'hook called for UKAI disks')

  const remainingMs = (): number => Math.max(0, deps.deadlineMs - Date.now())
  let meta: MetaStore
  const connectStartedMs = Date.now()
  let auth: ZkAuth | null
  try {
    auth = config.zkAuthFile === null ? null : readZkAuthFile(config.zkAuthFile)
  } catch (err) {
    log.error({ ...base, err: (err as Error).message }, 'ZooKeeper credentials unusable (zk-auth in the hook config): the disks stay where they are')
    return
  }
  try {
    meta = await MetaStore.connect(config.zk, { auth, connectTimeoutMs: Math.max(100, remainingMs() - 200), logger: log })
  } catch (err) {
    log.error({ ...base, zk: config.zk, err: (err as Error).message }, 'ZooKeeper unreachable: the disks stay where they are')
    return
  }
  log.info({ ...base, connectMs: Date.now() - connectStartedMs }, 'connected to ZooKeeper')
  try {
    if (role === 'toward-here') {
      const site = await siteOfHost(meta, config.host)
      for (const d of disks) {
        const startedMs = Date.now()
        try {
          const out = await prepareDiskToward(meta, d.disk, site, { rateBytesPerSec: config.rateBytesPerSec })
          log.info({ ...base, ...out, ms: Date.now() - startedMs }, out.action === 'started' ? `relocating ${d.disk} toward ${site}` : `${d.disk}: ${out.action}`)
        } catch (err) {
          log.error({ ...base, disk: d.disk, site, err: (err as Error).message }, `${d.disk} cannot move toward ${site}; it stays where it is`)
        }
      }
    } else {
      for (const d of disks) {
        try {
          const out = await finishDiskMigration(meta, d.disk, config.host, { releaseTimeoutMs: Math.min(RELEASE_WAIT_MS_MAX, Math.max(0, remainingMs() - 500)) })
          log.info({ ...base, ...out }, `${d.disk}: lease ${out.lease}`)
        } catch (err) {
          log.error({ ...base, disk: d.disk, err: (err as Error).message }, `${d.disk}: could not finish on this host`)
        }
      }
    }
  } catch (err) {
    log.error({ ...base, err: (err as Error).message }, 'hook failed; libvirt goes on')
  } finally {
    await meta.close()
  }
}
