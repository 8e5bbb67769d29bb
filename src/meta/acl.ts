// `ukai zk secure`: puts this session's ACL (ALL for the cluster's digest identity, see
// credentials.ts) on every znode under /ukai — the migration of a cluster that ran without
// credentials (its znodes are world-open, so any client may re-ACL them). Parents first, so a
// walk that stops half-way leaves no secured parent above an open child it could not reach.
// Znodes that vanish during the walk (ephemerals, requests) are skipped.
import { isUkaiError } from '../errors'
import { paths } from './schema'
import { MetaStore, zkOf } from './store'

export interface SecureResult { secured: number, alreadySecure: number, vanished: number }

// Bounds the walk: far more znodes than any cluster has (a disk has a handful plus segments).
const ZNODES_MAX = 10_000_000

export async function secureAllZnodes (meta: MetaStore, onZnode?: (path: string) => void): Promise<SecureResult> {
  const zk = zkOf(meta)
  const out: SecureResult = { secured: 0, alreadySecure: 0, vanished: 0 }
  const want = await zk.ownAclKey()
  const queue: string[] = [paths.root]
  let seen = 0
  while (queue.length > 0) {
    const p = queue.shift() as string
    if (++seen > ZNODES_MAX) throw new Error(`more than ${ZNODES_MAX} znodes under ${paths.root}: refusing to go on`)
    try {
      const { key } = await zk.getAcl(p)
      if (key === want) out.alreadySecure++
      else {
        await zk.setOwnAcl(p)
        out.secured++
        onZnode?.(p)
      }
      for (const c of await zk.children(p)) queue.push(`${p}/${c}`)
    } catch (err) {
      if (isUkaiError(err, 'NOT_FOUND')) { out.vanished++; continue }
      throw err
    }
  }
  return out
}
