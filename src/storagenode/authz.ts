// Who may call what on a storage node (docs/security.md). The TLS handshake already refused any
// certificate the cluster CA did not sign, or an expired one; here every call (and every Io
// stream, at its start) is checked against the revocation list and the role table below, and
// refused with PERMISSION_DENIED naming the identity and the call. The lease epoch still fences:
// authorization says who may write at all, fencing which writer of a disk is current.
//
// Why agents may DeleteDisk: a relocation run by the disk's lease holder drops the far replicas'
// data (relocate/executor.ts). An agent's DeleteDisk must carry a lease epoch the node accepts
// (not older than its fence for the disk), so a host that does not hold the disk cannot delete
// it; an admin's needs none.
import type * as grpc from '@grpc/grpc-js'
import { UkaiError } from '../errors'
import type { Logger } from '../log'
import type { Identity, Role } from './identity'
import { identityOfSubjectAltName, normalizeSerial } from './identity'
import { toServiceError } from './status'
import type { RevocationList } from './revocation'
import type { StorageHandlers } from './wire'

type Method = keyof StorageHandlers & string

// Data and copies: agents (the hypervisors), peer nodes (node-to-node copies), admins (the CLI
// reads and writes for import, export, clone). Deletes: admins; agents only under the lease.
export const ROLES_OF_METHOD: Record<Method, readonly Role[]> = {
  Io: ['agent', 'node', 'admin'],
  IoBatch: ['agent', 'node', 'admin'],
  Fence: ['agent', 'node', 'admin'],
  BlockInfo: ['agent', 'node', 'admin'],
  ListBlocks: ['agent', 'node', 'admin'],
  LocateBlock: ['agent', 'admin'],
  Stat: ['agent', 'node', 'admin'],
  Ping: ['agent', 'node', 'admin'],
  PullBlock: ['agent', 'node', 'admin'],
  CopyBase: ['agent', 'node', 'admin'],
  PruneVersions: ['agent', 'admin'],
  DeleteDisk: ['agent', 'admin'],
  DeleteBlocks: ['admin'],
  // A scrub reads every byte of a disk's versions on the node (nothing an agent could not read
  // with Io): an operator's call, and the controller's, which runs with an agent certificate and
  // acts on the nodes' background findings (controller/scrub-findings.ts).
  Scrub: ['agent', 'admin']
}

export interface AuthzDeps {
  nodeId: string
  revoked: Pick<RevocationList, 'has' | 'onChange'>
  log: Logger
}

// The caller of `call`, or the reason it is refused.
export function callerOf (call: { getAuthContext?: () => { sslPeerCertificate?: { subjectaltname?: string, serialNumber?: string } } | null }, deps: AuthzDeps, method: string): Identity {
  const cert = call.getAuthContext?.()?.sslPeerCertificate
  if (cert === undefined) throw new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: ${method} refused: no client certificate`)
  const id = identityOfSubjectAltName(cert.subjectaltname)
  if (id === null) throw new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: ${method} refused: the client certificate names no UKAI identity`)
  const serial = cert.serialNumber === undefined ? '' : normalizeSerial(cert.serialNumber)
  if (serial === '' || deps.revoked.has(serial)) {
    throw new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: ${method} refused: the certificate of ${id.role} ${id.name} (serial ${serial}) is revoked`)
  }
  if (!ROLES_OF_METHOD[method as Method]?.includes(id.role)) {
    throw new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: ${method} refused: ${id.role} ${id.name} may not call it (allowed: ${(ROLES_OF_METHOD[method as Method] ?? []).join(', ')})`)
  }
  return id
}

// Wraps every handler: a refused call answers PERMISSION_DENIED and never reaches the store.
// `onCaller` lets a handler see who called (DeleteDisk's lease rule).
// Io streams live as long as a connection: each one's caller is re-checked when the revocation
// list changes, and a revoked caller's stream is ended with PERMISSION_DENIED.
export function guardHandlers (handlers: StorageHandlers, deps: AuthzDeps): StorageHandlers {
  const out: Record<string, unknown> = {}
  const streams = new Map<grpc.ServerDuplexStream<unknown, unknown>, string>()  // → its caller's serial
  deps.revoked.onChange(() => {
    for (const [call, serial] of streams) {
      if (!deps.revoked.has(serial)) continue
      streams.delete(call)
      deps.log.warn({ serial, peer: call.getPeer() }, 'Io stream of a revoked certificate ended')
      call.emit('error', toServiceError(new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: certificate ${serial} was revoked`)))
    }
  })
  for (const [method, handler] of Object.entries(handlers) as Array<[Method, (...a: any[]) => void]>) {
    if (method === 'Io' || method === 'IoBatch') {
      out[method] = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        try {
          callerOf(call, deps, method)
        } catch (err) {
          deps.log.warn({ err: (err as Error).message, peer: call.getPeer() }, 'refused')
          call.emit('error', toServiceError(err as UkaiError))
          return
        }
        const serial = call.getAuthContext()?.sslPeerCertificate?.serialNumber
        if (serial !== undefined) {
          streams.set(call, normalizeSerial(serial))
          const forget = (): void => { streams.delete(call) }
          call.once('close', forget)
          call.once('cancelled', forget)
          call.once('finish', forget)
        }
        handler(call)
      }
    } else {
      out[method] = (call: grpc.ServerUnaryCall<any, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        try {
          const id = callerOf(call, deps, method)
          if (method === 'DeleteDisk' && id.role !== 'admin' && !(Number(call.request?.leaseEpoch) > 0)) {
            throw new UkaiError('PERMISSION_DENIED', `storage node ${deps.nodeId}: DeleteDisk refused: ${id.role} ${id.name} may delete a disk's data only under its lease (no lease epoch given)`)
          }
        } catch (err) {
          deps.log.warn({ err: (err as Error).message, peer: call.getPeer() }, 'refused')
          callback(toServiceError(err as UkaiError))
          return
        }
        handler(call, callback)
      }
    }
  }
  return out as unknown as StorageHandlers
}
