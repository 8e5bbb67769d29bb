// `ukai controller`: a standalone controller candidate — the election and the leader's duties,
// with no FUSE mount and no disks of its own. Runs next to ZooKeeper (or anywhere), so the
// cluster's background work has an owner even where no agent runs (docs/operations.md).
import { Controller } from '../controller/controller'
import { defaultDuties, DutyOptions } from '../controller/duties'
import { Lifecycle } from '../lib/lifecycle'
import { removePidFile, writePidFile } from '../lib/pid-file'
import { Logger } from '../log'
import { validateId } from '../meta/schema'
import { MetaStore } from '../meta/store'
import type { ZkAuth } from '../meta/credentials'

export interface ControllerDaemonOptions {
  host: string
  zk: string
  zkAuth: ZkAuth | null // null: --insecure-zk
  zkSessionTimeoutMs?: number
  zkConnectTimeoutMs?: number
  pidFile?: string
  duties?: DutyOptions
  logger: Logger
}

export interface RunningController { controller: Controller, close: () => Promise<void> }

export async function runControllerDaemon (opts: ControllerDaemonOptions): Promise<RunningController> {
  validateId(opts.host, 'host name')
  const meta = await MetaStore.connect(opts.zk, { auth: opts.zkAuth, logger: opts.logger, sessionTimeoutMs: opts.zkSessionTimeoutMs, connectTimeoutMs: opts.zkConnectTimeoutMs })
  const controller = new Controller({ meta, host: opts.host, kind: 'daemon', duties: defaultDuties(opts.duties), logger: opts.logger })
  try {
    await controller.ready()
  } catch (err) {
    await controller.close().catch(() => {})
    await meta.close()
    throw err
  }
  if (opts.pidFile !== undefined) writePidFile(opts.pidFile)
  // 1. leave the election (the duties stop; a standby leads), 2. the ZooKeeper session last.
  const life = new Lifecycle({
    release: async () => {
      await controller.close()
      await meta.close()
      if (opts.pidFile !== undefined) removePidFile(opts.pidFile)
    }
  })
  return { controller, close: async () => { await life.close() } }
}
