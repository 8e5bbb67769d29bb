// Runs a relocation in this process (the CLI), for a disk nobody holds the lease of: take the
// lease, run the executor, release. If an agent asks for the lease meanwhile (its VM writes),
// hand it over at once; that agent's runner continues the relocation.
import { safetyCatch } from '../errors'
import { Logger, silentLogger } from '../log'
import { LeaseManager } from '../meta/lease'
import { MetaStore } from '../meta/store'
import { cliHostName } from '../admin/admin-lease'
import { NodePool } from '../vdisk/node-pool'
import { VirtualDisk } from '../vdisk/virtual-disk'
import { RelocationOutcome } from './executor'
import { RelocationRunner } from './runner'

export async function runRelocationHere (meta: MetaStore, name: string, opts: { site?: string, logger?: Logger } = {}): Promise<RelocationOutcome> {
  const log = opts.logger ?? silentLogger
  const host = cliHostName()
  const pool = new NodePool(meta, { host, site: opts.site ?? '', logger: log })
  await pool.start()
  let disk: VirtualDisk | null = null
  const runner = new RelocationRunner({ meta, pool, host, logger: log })
  const leases = new LeaseManager(meta, host, {
    onHandoverRequested: () => { runner.stop(name); disk?.handOver().catch(() => {}) },
    onLost: () => { runner.stop(name); disk?.leaseLost() }
  }, { logger: log })
  try {
    disk = await VirtualDisk.open({ meta, pool, leases, logger: log }, name)
    await disk.ensureLease()
    return await (runner.maybeStart(disk) ?? Promise.resolve('stopped' as const))
  } finally {
    await runner.close()
    await disk?.close().catch(safetyCatch)
    await pool.close()
  }
}
