// Mutual TLS for every gRPC channel to a storage node (agent → node, node → node copies,
// CLI → node). A TLS dir holds one identity: ca.crt (the cluster CA), tls.crt and tls.key (this
// identity's certificate and key, issued by `ukai cert issue`) and crl.pem / crl-number (the CA's
// signed revocation list and the highest CRL number this process accepted: revocation.ts).
//
// Rotation without downtime: CertificateFiles re-reads the three files when their mtimes change
// (polled every CERT_POLL_INTERVAL_MS, and at once on SIGHUP) and hands the new pair to grpc-js
// through its CertificateProvider interface; the server swaps its secure context
// (setSecureContext) and clients use the new pair for their next connection. Connections already
// open keep their session, so I/O in flight sees nothing. A half-written pair (cert of one key,
// key of another) is not published: the next poll tries again, so replace files by rename.
//
// Why grpc-js's CertificateProvider and not createSsl: createSsl's context is fixed at bind
// time; the provider path (grpc-js ≥ 1.10, experimental namespace) is the one that updates it.
// grpc-js's own FileWatcherCertificateProvider loads asynchronously, so a client's first
// connection could race the first load and fail; this one loads synchronously at construction.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { UkaiError } from '../errors'
import { Identity, identityOfSubjectAltName } from './identity'

export const CA_CERT_FILE = 'ca.crt'
export const CERT_FILE = 'tls.crt'
export const KEY_FILE = 'tls.key'
// How soon a replaced certificate, key or CRL file is picked up without a SIGHUP.
export const CERT_POLL_INTERVAL_MS = 1000

// One SIGHUP handler per process, whatever the number of watched files (it re-reads them all).
const hupListeners = new Set<() => void>()
let hupInstalled = false
function installHup (): void {
  if (hupInstalled) return
  hupInstalled = true
  process.on('SIGHUP', () => { for (const fn of hupListeners) fn() })
}

// Calls fn on every SIGHUP until the returned function is called (revocation.ts re-reads its CRL).
export function onSighup (fn: () => void): () => void {
  hupListeners.add(fn)
  installHup()
  return () => { hupListeners.delete(fn) }
}

type CaListener = (u: { caCertificate: Buffer } | null) => void
type IdListener = (u: { certificate: Buffer, privateKey: Buffer } | null) => void

interface Loaded { ca: Buffer, cert: Buffer, key: Buffer, stamp: string }

// One identity's files, watched. Shared by every server and client of a process.
export class CertificateFiles implements grpc.experimental.CertificateProvider {
  readonly dir: string
  readonly identity: Identity
  private loaded: Loaded
  private readonly caListeners = new Set<CaListener>()
  private readonly idListeners = new Set<IdListener>()
  private readonly timer: NodeJS.Timeout
  private readonly onHup = (): void => { this.reload() }
  reloads = 0

  constructor (dir: string) {
    this.dir = path.resolve(dir)
    this.loaded = loadPair(this.dir)
    this.identity = identityOf(this.loaded.cert, path.join(this.dir, CERT_FILE))
    this.timer = setInterval(() => this.reload(), CERT_POLL_INTERVAL_MS)
    this.timer.unref()
    hupListeners.add(this.onHup)
    installHup()
  }

  // Re-reads the files if they changed; true when a new pair was published.
  reload (): boolean {
    let next: Loaded
    try {
      if (stampOf(this.dir) === this.loaded.stamp) return false
      next = loadPair(this.dir)
      const id = identityOf(next.cert, path.join(this.dir, CERT_FILE))
      if (id.role !== this.identity.role || id.name !== this.identity.name) return false  // not a rotation: another identity
    } catch {
      return false  // mid-replacement or a bad pair: keep serving the old one, try again next poll
    }
    this.loaded = next
    this.reloads++
    for (const l of this.caListeners) l({ caCertificate: next.ca })
    for (const l of this.idListeners) l({ certificate: next.cert, privateKey: next.key })
    return true
  }

  // A new listener hears the current pair at once (a client connects right after adding it) and
  // again on the next tick: grpc-js's server credentials add their listener before the server's
  // watcher, so the first delivery would reach no server.
  addCaCertificateListener (l: CaListener): void {
    this.caListeners.add(l)
    const tell = (): void => { if (this.caListeners.has(l)) l({ caCertificate: this.loaded.ca }) }
    tell()
    queueMicrotask(tell)
  }

  removeCaCertificateListener (l: CaListener): void { this.caListeners.delete(l) }
  addIdentityCertificateListener (l: IdListener): void {
    this.idListeners.add(l)
    const tell = (): void => { if (this.idListeners.has(l)) l({ certificate: this.loaded.cert, privateKey: this.loaded.key }) }
    tell()
    queueMicrotask(tell)
  }

  removeIdentityCertificateListener (l: IdListener): void { this.idListeners.delete(l) }

  close (): void {
    clearInterval(this.timer)
    hupListeners.delete(this.onHup)
  }
}

function stampOf (dir: string): string {
  return [CA_CERT_FILE, CERT_FILE, KEY_FILE].map(f => {
    const st = fs.statSync(path.join(dir, f))
    return `${st.mtimeMs}:${st.size}:${st.ino}`
  }).join('|')
}

function loadPair (dir: string): Loaded {
  const stamp = stampOf(dir)
  const read = (f: string): Buffer => fs.readFileSync(path.join(dir, f))
  const ca = read(CA_CERT_FILE)
  const cert = read(CERT_FILE)
  const key = read(KEY_FILE)
  if (!new crypto.X509Certificate(cert).checkPrivateKey(crypto.createPrivateKey(key))) {
    throw UkaiError.badArgument(`${path.join(dir, KEY_FILE)} is not the key of ${path.join(dir, CERT_FILE)}`)
  }
  return { ca, cert, key, stamp }
}

function identityOf (cert: Buffer, file: string): Identity {
  const id = identityOfSubjectAltName(new crypto.X509Certificate(cert).subjectAltName)
  if (id === null) throw UkaiError.badArgument(`${file} names no UKAI identity (a URI ukai://ROLE/NAME): issue it with 'ukai cert issue'`)
  return id
}

// Opens a TLS dir with a clear error naming what is missing.
export function openTlsDir (dir: string): CertificateFiles {
  for (const f of [CA_CERT_FILE, CERT_FILE, KEY_FILE]) {
    const p = path.join(dir, f)
    if (!fs.existsSync(p)) throw UkaiError.badArgument(`TLS dir ${dir} has no ${f} (expected ${CA_CERT_FILE}, ${CERT_FILE}, ${KEY_FILE}: 'ukai cert issue … --out ${dir}')`)
  }
  try {
    return new CertificateFiles(dir)
  } catch (err) {
    throw UkaiError.badArgument(`TLS dir ${dir}: ${(err as Error).message}`)
  }
}

// The server side: mutual TLS, a client certificate of the cluster CA required (the handshake
// refuses any other, and expired ones).
export function serverCredentials (files: CertificateFiles): grpc.ServerCredentials {
  return grpc.experimental.createCertificateProviderServerCredentials(files, files, true)
}

// ---- the client side ----

// How this process's storage clients connect: one setting per process (the daemon or CLI sets
// it once at start, from --tls-dir / UKAI_TLS_DIR / --insecure); a client may pass its own.
// 'missing' makes every connection fail with the reason (the CLI found no certificate).
export type ClientTls =
  | { kind: 'tls', files: CertificateFiles }
  | { kind: 'insecure' }
  | { kind: 'missing', why: string }

// Library default: insecure, for in-process servers started without TLS (the unit tests). The
// daemons and the CLI always set it.
let processClientTls: ClientTls = { kind: 'insecure' }

export function setClientTls (tls: ClientTls): void { processClientTls = tls }
export function clientTls (): ClientTls { return processClientTls }

// A channel to node `nodeId`: the server must present a certificate of the cluster CA naming
// that node. The TLS server name is a name of our own, not the address (an IP address is not a
// valid SNI name, and the peer's identity is what is checked).
export function channelOf (tls: ClientTls, nodeId: string): { credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions } {
  if (tls.kind === 'insecure') return { credentials: grpc.credentials.createInsecure(), options: {} }
  if (tls.kind === 'missing') throw new UkaiError('PERMISSION_DENIED', tls.why)
  const credentials = grpc.experimental.createCertificateProviderChannelCredentials(tls.files, tls.files, {
    checkServerIdentity: (_host, cert) => {
      const id = identityOfSubjectAltName(cert.subjectaltname)
      if (id === null || id.role !== 'node' || id.name !== nodeId) {
        return new Error(`storage node ${nodeId} presented the certificate of ${id === null ? 'no UKAI identity' : `${id.role} ${id.name}`}`)
      }
      return undefined
    }
  })
  return { credentials, options: { 'grpc.ssl_target_name_override': `${nodeId}.node.ukai` } }
}
