// The CRL's znode (/ukai/crl, src/meta/schema.ts): `ukai cert revoke` publishes the CA's newest
// CRL there, and every storage node and agent follows it with a watch. The znode carries the
// cluster's digest ACL like every other UKAI znode, and every daemon host holds those
// credentials: so the znode is a delivery channel, not the authority. Nodes verify the CA's
// signature and the CRL number (src/storagenode/revocation.ts); here we only carry bytes.
import { UkaiError, isUkaiError, safetyCatch } from '../errors'
import type { Logger } from '../log'
import { CrlRecord, checkCrlRecord, decodeJson, encodeJson, paths } from './schema'
import { MetaStore, zkOf } from './store'

// A watch that could not be set (ZooKeeper away) is tried again after this long.
const CRL_REWATCH_MS = 1000
// Attempts of a conditional publish that lost a race before giving up.
const CRL_PUBLISH_ATTEMPTS_MAX = 5

// The record, null when there is none; `undecodable` when the znode holds something else.
export async function readCrlRecord (meta: MetaStore, watch?: () => void): Promise<{ rec: CrlRecord | null, version: number } | null> {
  const got = await zkOf(meta).getOrNull(paths.crl, watch)
  if (got === null) return null
  try {
    return { rec: checkCrlRecord(decodeJson<CrlRecord>(got.data, 'CRL record')), version: got.stat.version }
  } catch {
    return { rec: null, version: got.stat.version }
  }
}

// Publishes CRL number `crlNumber` unless ZooKeeper already holds one as new. `numberOf` tells
// the number of the CRL found there as the caller's CA verifies it (null: not a CRL of this CA,
// overwritten). Conditional on the version read, so two admins revoking at once cannot put the
// older list last.
export async function publishCrlRecord (meta: MetaStore, crl: { crlNumber: number, pem: string }, numberOf: (pem: string) => Promise<number | null>): Promise<{ outcome: 'published' | 'same', previous: number | null }> {
  const zk = zkOf(meta)
  const data = encodeJson<CrlRecord>({ v: 1, crlNumber: crl.crlNumber, pem: crl.pem, publishedAtMs: Date.now() })
  for (let attempt = 1; ; attempt++) {
    const now = await readCrlRecord(meta)
    const previous = now?.rec == null ? null : await numberOf(now.rec.pem)
    if (previous !== null && previous > crl.crlNumber) throw UkaiError.conflict(`ZooKeeper already holds CRL number ${previous}, newer than ${crl.crlNumber}: this CA dir is behind (another CA dir revoked since?)`)
    if (previous === crl.crlNumber) return { outcome: 'same', previous }
    try {
      if (now === null) await zk.create(paths.crl, data)
      else await zk.set(paths.crl, data, now.version)
      return { outcome: 'published', previous }
    } catch (err) {
      const lost = isUkaiError(err, 'ZK_CONFLICT') || isUkaiError(err, 'ALREADY_EXISTS') || isUkaiError(err, 'NOT_FOUND')
      if (!lost || attempt >= CRL_PUBLISH_ATTEMPTS_MAX) throw err
    }
  }
}

// Calls onPem with the znode's CRL now and after every change, until the returned function is
// called. A new session (the old watch gone) reads it again; so does a retry when ZooKeeper was
// away. A missing or undecodable znode changes nothing (the list in force stays), logged.
export function followCrl (meta: MetaStore, onPem: (pem: string) => void, log: Logger): () => void {
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  const read = (): void => {
    if (stopped) return
    readCrlRecord(meta, read).then(async (got) => {
      // Created between the read and the watch set on the missing znode: that watch waits for
      // the next change, so look once more.
      got ??= await readCrlRecord(meta)
      if (stopped || got === null) return
      if (got.rec === null) { log.warn({ path: paths.crl }, 'the CRL znode holds no CRL record: ignored, the list in force stays'); return }
      onPem(got.rec.pem)
    }, (err: unknown) => {
      safetyCatch(err)
      if (stopped) return
      log.warn({ err: String(err) }, 'cannot read the CRL znode: trying again')
      clearTimeout(timer)
      timer = setTimeout(read, CRL_REWATCH_MS)
      timer.unref()
    })
  }
  const offSession = meta.onSession(read)
  read()
  return () => { stopped = true; clearTimeout(timer); offSession() }
}
