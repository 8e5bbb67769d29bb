// What every CLI verb needs: the ZooKeeper connect string, and a metadata session that is
// closed when the verb ends.
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { validateId } from '../meta/schema'
import { MetaStore, ZK_CONNECT_TIMEOUT_MS_DEFAULT, ZK_SESSION_TIMEOUT_MS_DEFAULT } from '../meta/store'
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

export async function withMeta<T> (cmd: Command, fn: (meta: MetaStore) => Promise<T>): Promise<T> {
  const meta = await MetaStore.connect(zkConnectString(cmd), { connectTimeoutMs: zkConnectTimeoutMs(cmd) })
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
