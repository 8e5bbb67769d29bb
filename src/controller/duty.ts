// What the elected controller hosts: a duty is started when this process becomes the leader and
// closed when it stops leading (a session expiry closes it at once: never two leaders acting).
// A duty keeps no state of its own that matters: what it decides lives in ZooKeeper (relocation
// records, the placement map), so the next leader's fresh instance resumes from there.
import { Logger } from '../log'
import { MetaStore } from '../meta/store'
import { RelocationRunner } from '../relocate/runner'
import { NodePool } from '../vdisk/node-pool'

export interface ControllerDuty {
  readonly name: string
  start (): Promise<void>
  close (): Promise<void>
  // What it is doing now, for `ukai controller status` (optional: a duty without it shows 'running').
  status? (): { state: string, detail?: Record<string, unknown> }
}

// What a duty is built from. `runner` and `pool` are the process's own (an agent's, so that a
// lease-free run of a disk gives way to this agent's run when it takes the disk's lease).
export interface DutyContext {
  readonly meta: MetaStore
  readonly pool: NodePool
  readonly runner: RelocationRunner
  readonly host: string
  readonly logger: Logger
}

// A fresh duty per leadership term (a deposed leader's instance is closed and dropped).
export type DutyFactory = (ctx: DutyContext) => ControllerDuty
