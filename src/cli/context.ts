// What every CLI verb needs: the ZooKeeper connect string, and a metadata session that is
// closed when the verb ends.
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { validateId } from '../meta/schema'
import { MetaStore, ZK_CONNECT_TIMEOUT_MS_DEFAULT, ZK_SESSION_TIMEOUT_MS_DEFAULT } from '../meta/store'
import { ZK_AUTH_FILE_DEFAULT, ZK_AUTH_FILE_ENV, findZkAuthFile, readZkAuthFile, type ZkAuth } from '../meta/credentials'
import { checkZkConnect } from './parse'

export const ZK_DEFAULT = '127.0.0.1:2181'

export function zkConnectString (cmd: Command): string {
  const opts = cmd.optsWithGlobals() as { zk?: string }
  if (opts.zk !== undefined) return checkZkConnect(opts.zk, '--zk')
  if (process.env.UKAI_ZK !== undefined) return checkZkConnect(process.env.UKAI_ZK, 'UKAI_ZK')
  return ZK_DEFAULT
}

export function zkSessionTimeoutMs (cmd: Command): number {
  const opts = cmd.optsWithGlobals() as { zkSessionTimeoutMs?: number }
  return opts.zkSessionTimeoutMs ?? ZK_SESSION_TIMEOUT_MS_DEFAULT
}

// --zk-timeout-ms, checked by msOption when the command line was read; daemons honour it too.
export function zkConnectTimeoutMs (cmd: Command): number {
  const opts = cmd.optsWithGlobals() as { zkTimeoutMs?: number }
  return opts.zkTimeoutMs ?? ZK_CONNECT_TIMEOUT_MS_DEFAULT
}

export const INSECURE_ZK_WARNING = 'ZooKeeper ACLs are OFF (--insecure-zk): anyone who can reach ZooKeeper can read and change every disk\'s metadata'

// The ZooKeeper credentials of this process (--zk-auth, $UKAI_ZK_AUTH, /etc/ukai/zk-auth), or
// null with --insecure-zk, which is said out loud through `warn` (a daemon's logger, or stderr).
export function zkAuth (cmd: Command, warn: (msg: string) => void = (m) => { process.stderr.write(`warning: ${m}\n`) }): ZkAuth | null {
  const opts = cmd.optsWithGlobals() as { zkAuth?: string, insecureZk?: boolean }
  if (opts.insecureZk === true) {
    if (opts.zkAuth !== undefined) throw UkaiError.badArgument('--insecure-zk and --zk-auth contradict each other: give one')
    warn(INSECURE_ZK_WARNING)
    return null
  }
  const file = findZkAuthFile(opts.zkAuth)
  if (file === null) {
    throw UkaiError.badArgument(`no ZooKeeper credentials: give --zk-auth FILE, set ${ZK_AUTH_FILE_ENV}, or create ${ZK_AUTH_FILE_DEFAULT} (one line user:password, mode 0600; \`ukai dev up\` prints its cluster's); --insecure-zk runs without (not for production)`)
  }
  return readZkAuthFile(file)
}

// The credentials file to name in a config other processes read (the libvirt hook's), checked;
// null with --insecure-zk.
export function zkAuthFileOf (cmd: Command): string | null {
  const auth = zkAuth(cmd)
  return auth === null ? null : auth.file
}

export async function withMeta<T> (cmd: Command, fn: (meta: MetaStore) => Promise<T>): Promise<T> {
  const meta = await MetaStore.connect(zkConnectString(cmd), { auth: zkAuth(cmd), connectTimeoutMs: zkConnectTimeoutMs(cmd) })
  try {
    return await fn(meta)
  } finally {
    await meta.close()
  }
}

// Repeatable `--node-address ID=HOST:PORT` / `--peer-address ID=HOST:PORT`: commander collects
// the raw values, addressMap checks them and builds { ID: 'HOST:PORT' } (a repeated ID is refused).
export function collect (value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value]
}

export function addressMap (values: string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const v of values ?? []) {
    const m = /^([^=]+)=(.+):(\d{1,5})$/.exec(v)
    if (m === null || Number(m[3]) > 65535 || m[2] === '') throw UkaiError.badArgument(`bad ${flag} '${v}': expected ID=HOST:PORT`)
    validateId(m[1], `node id in ${flag}`)
    if (out[m[1]] !== undefined) throw UkaiError.badArgument(`${flag} names node ${m[1]} twice`)
    out[m[1]] = `${m[2]}:${m[3]}`
  }
  return out
}
