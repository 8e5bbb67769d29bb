// Admin work that must hold a disk's lease (snapshot commit with no agent holding it, rollback,
// flattening a clone): open the disk in this process, take the lease — which fences every node
// against older holders — do the work, release.
import os from 'node:os'
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { LeaseManager } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { NodePool } from '../vdisk/node-pool'
import { VirtualDisk } from '../vdisk/virtual-disk'

export interface AdminContext {
  meta: MetaStore
  host: string           // who we are for the lease (a CLI host name)
  logger?: Logger
}

// The name an admin process (the CLI, an import) holds leases and asks nodes under: unique per
// process, never an agent's name.
export function cliHostName (): string {
  return `cli-${os.hostname()}-${process.pid}`.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 120)
}

// Runs `fn` with the disk open here and its lease held (nodes fenced), then releases it.
export async function withDiskLease<T> (ctx: AdminContext, name: string, fn: (disk: VirtualDisk, pool: NodePool) => Promise<T>): Promise<T> {
  const log = ctx.logger ?? silentLogger
  const pool = new NodePool(ctx.meta, { host: ctx.host, site: '', logger: log })
  await pool.start()
  let disk: VirtualDisk | null = null
  const leases = new LeaseManager(ctx.meta, ctx.host, {
    onHandoverRequested: () => {},   // we hold it for a moment only; the asker waits or forces
    onLost: () => { disk?.leaseLost() }
  }, { logger: log })
  try {
    disk = await VirtualDisk.open({ meta: ctx.meta, pool, leases, logger: log }, name)
    await disk.ensureLease()
    return await fn(disk, pool)
  } finally {
    await disk?.close().catch(safetyCatch)
    await pool.close()
  }
}

