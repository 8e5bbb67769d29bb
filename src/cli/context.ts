// What every CLI verb needs: the ZooKeeper connect string, and a metadata session that is
// closed when the verb ends.
import { Command } from 'commander'
import { MetaStore } from '../meta/store'
import { ZK_CONNECT_TIMEOUT_MS_DEFAULT } from '../meta/zk-client'

export const ZK_DEFAULT = '127.0.0.1:2181'

export function zkConnectString (cmd: Command): string {
  const opts = cmd.optsWithGlobals() as { zk?: string }
  return opts.zk ?? process.env.UKAI_ZK ?? ZK_DEFAULT
}

export function zkSessionTimeoutMs (cmd: Command): number {
  const opts = cmd.optsWithGlobals() as { zkSessionTimeoutMs?: string }
  return Number(opts.zkSessionTimeoutMs ?? 10000)
}

export async function withMeta<T> (cmd: Command, fn: (meta: MetaStore) => Promise<T>): Promise<T> {
  const opts = cmd.optsWithGlobals() as { zkTimeoutMs?: string }
  const connectTimeoutMs = opts.zkTimeoutMs !== undefined ? Number(opts.zkTimeoutMs) : ZK_CONNECT_TIMEOUT_MS_DEFAULT
  const meta = await MetaStore.connect(zkConnectString(cmd), { connectTimeoutMs })
  try {
    return await fn(meta)
  } finally {
    meta.close()
  }
}
