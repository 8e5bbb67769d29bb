// What `ukai libvirt install-hook` checks of the settings it leaves in hook.conf, so an operator
// learns at install time — not at the first migration — that the hook cannot do its job:
// ZooKeeper unreachable, a configured mount that is not a UKAI mount, no UKAI mount at all,
// no agent of that host name registered (or it is not running), an NBD directory missing.
// Each problem is one sentence saying what to do; none stops the install (the hook never
// fails a libvirt operation anyway: it logs and lets libvirt go on).
import fs from 'node:fs'
import { isUkaiError } from '../errors'
import { listMounts } from '../lib/mounts'
import { MetaStore } from '../meta/store'
import { readZkAuthFile, type ZkAuth } from '../meta/credentials'
import { HookConfig, UKAI_FSTYPE } from './hook-config'

// As long as a hook call may take by default: ZooKeeper slower than that is a problem too.
const ZK_CHECK_TIMEOUT_MS = 4000

export async function checkHookConfig (cfg: HookConfig): Promise<string[]> {
  const problems: string[] = []
  const ukaiMounts = listMounts().filter(m => m.fstype === UKAI_FSTYPE).map(m => m.target)
  for (const m of cfg.mounts) {
    if (!ukaiMounts.includes(m)) problems.push(`mount ${m} is not a UKAI mount now: start the agent ('ukai mount --mount-point ${m} …') or fix 'mount =' in ${cfg.source}`)
  }
  if (cfg.mounts.length === 0 && ukaiMounts.length === 0) problems.push(`no UKAI mount on this host: the hook looks for disks under every UKAI mount; start the agent ('ukai mount')`)
  for (const d of cfg.nbdDirs) {
    if (!fs.existsSync(d)) problems.push(`nbd-dir ${d} does not exist: start the agent with --nbd-dir ${d} or fix 'nbd-dir =' in ${cfg.source}`)
  }
  let meta: MetaStore
  let auth: ZkAuth | null
  try {
    auth = cfg.zkAuthFile === null ? null : readZkAuthFile(cfg.zkAuthFile)
  } catch (err) {
    if (!isUkaiError(err)) throw err
    problems.push(`${err.message}: fix 'zk-auth =' in ${cfg.source} (or pass --zk-auth)`)
    return problems
  }
  try {
    meta = await MetaStore.connect(cfg.zk, { auth, connectTimeoutMs: ZK_CHECK_TIMEOUT_MS })
  } catch (err) {
    if (!isUkaiError(err)) throw err
    problems.push(`ZooKeeper ${cfg.zk} is not reachable (${err.message}): fix 'zk =' in ${cfg.source} (or pass --zk)`)
    return problems
  }
  try {
    const agent = (await meta.listAgents()).find(a => a.host === cfg.host)
    if (agent === undefined) problems.push(`no agent named '${cfg.host}' is registered in ZooKeeper: 'host =' in ${cfg.source} must be this host's 'ukai mount --host' (or pass --host)`)
    else if (agent.alive === null) problems.push(`agent '${cfg.host}' is registered but not running: start it ('ukai mount --host ${cfg.host} …')`)
  } finally {
    await meta.close()
  }
  return problems
}
