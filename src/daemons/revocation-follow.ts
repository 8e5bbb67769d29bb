// A daemon that accepts TLS peers (a storage node; an agent serving the tenant API) follows the
// CA's CRL in ZooKeeper: every version of the znode is offered to its revocation list, which
// believes it only if the CA signed it and its CRL number is not lower (storagenode/revocation.ts).
// So a revocation reaches every host within a watch's round trip, with no file copied.
import type { Logger } from '../log'
import { followCrl } from '../meta/crl-record'
import type { MetaStore } from '../meta/store'
import type { RevocationList } from '../storagenode/revocation'

// Returns the function that stops following (and the list's own file polling).
export function followRevocations (meta: MetaStore, revoked: RevocationList | null | undefined, log: Logger): () => void {
  if (revoked == null) return () => {}
  const stop = followCrl(meta, (pem) => {
    revoked.offer(pem, 'ZooKeeper').catch(err => log.error({ err: String(err) }, 'CRL from ZooKeeper not checked'))
  }, log)
  return () => { stop(); revoked.close() }
}
