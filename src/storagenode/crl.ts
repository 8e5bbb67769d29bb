// The cluster's certificate revocation list (CRL): an X.509 CRL signed by the cluster CA
// (RFC 5280 §5) that carries a CRL number (the cRLNumber extension) which every new list raises.
// `ukai cert revoke` makes it (src/security/crl.ts); every process that accepts TLS peers verifies
// it here before it believes a word of it (revocation.ts). Signed, so a copy travels through
// ZooKeeper, whose credentials every daemon host holds, and no such host can un-revoke anyone;
// numbered, so nobody can roll a node back to an older genuine list.
//
// Why @peculiar/x509 (already what makes the certificates): it generates and verifies CRLs on
// Node's WebCrypto, no child process; Node's own crypto parses certificates but not CRLs.
// Loading it costs a daemon ~0.2 s once at start.
import 'reflect-metadata'  // @peculiar/x509's dependency injection (tsyringe) needs it first
import { webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'
import { UkaiError } from '../errors'
import { normalizeSerial } from './identity'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])
export { x509 }

// In a TLS dir and the CA dir: the newest CRL this process (or the CA) holds, and the highest CRL
// number this process ever accepted (so a restart cannot be rolled back to an older list).
export const CRL_FILE = 'crl.pem'
export const CRL_NUMBER_FILE = 'crl-number'
// RFC 5280 §5.2.3.
export const CRL_NUMBER_OID = '2.5.29.20'
// A CRL number stays an exact JavaScript number (RFC 5280 allows 20 octets; one a second for
// 285 million years fits here).
const CRL_NUMBER_MAX = Number.MAX_SAFE_INTEGER
// A CRL larger than this is refused before parsing (one entry is ~40 bytes: 25,000 revocations).
export const CRL_BYTES_MAX = 1024 * 1024

export interface VerifiedCrl {
  number: number
  serials: Set<string>
  issuer: string
  thisUpdate: Date
  pem: string
}

// The cRLNumber extension's value: a DER INTEGER, positive, minimal.
export function crlNumberExtension (n: number): x509.Extension {
  if (!Number.isSafeInteger(n) || n < 1) throw UkaiError.internal(`a CRL number must be a positive safe integer, got ${n}`)
  let hex = n.toString(16)
  if (hex.length % 2 === 1) hex = `0${hex}`
  if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = `00${hex}`
  const body = Buffer.from(hex, 'hex')
  return new x509.Extension(CRL_NUMBER_OID, false, Buffer.concat([Buffer.from([0x02, body.length]), body]))
}

export function crlNumberOf (crl: x509.X509Crl): number {
  const ext = crl.getExtension(CRL_NUMBER_OID)
  if (ext === null) throw UkaiError.badArgument('the CRL carries no CRL number (cRLNumber extension)')
  const v = Buffer.from(ext.value)
  if (v.length < 3 || v[0] !== 0x02 || v[1] !== v.length - 2 || v[1] > 7 || (v[2] & 0x80) !== 0) throw UkaiError.badArgument('the CRL\'s CRL number is not a positive integer of at most 7 octets')
  const n = parseInt(v.subarray(2).toString('hex'), 16)
  if (!(n >= 1 && n <= CRL_NUMBER_MAX)) throw UkaiError.badArgument(`the CRL's CRL number ${n} is out of range`)
  return n
}

// PEM with the label RFC 7468 gives a CRL ('X509 CRL'), which openssl reads (@peculiar/x509's
// own toString says 'CRL').
export function crlPem (crl: x509.X509Crl): string {
  const b64 = Buffer.from(crl.rawData).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')
  return `-----BEGIN X509 CRL-----\n${b64}\n-----END X509 CRL-----\n`
}

// Every certificate in a PEM bundle (a ca.crt may hold two CAs during a CA rollover).
export function certificatesOf (pem: string): x509.X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(b => new x509.X509Certificate(b))
}

// Parses `text` (PEM or DER) and checks it was signed by one of the CAs in `caPem`; throws
// BAD_ARGUMENT naming what is wrong (not a CRL, another CA, a bad signature, no number).
export async function verifyCrl (text: string | Buffer, caPem: string): Promise<VerifiedCrl> {
  if (text.length > CRL_BYTES_MAX) throw UkaiError.badArgument(`the CRL is ${text.length} bytes, more than ${CRL_BYTES_MAX}`)
  let crl: x509.X509Crl
  try {
    crl = new x509.X509Crl(typeof text === 'string' ? text : new Uint8Array(text))
  } catch (err) {
    throw UkaiError.badArgument(`not an X.509 CRL: ${(err as Error).message}`)
  }
  const cas = certificatesOf(caPem)
  if (cas.length === 0) throw UkaiError.badArgument('no CA certificate to check the CRL against')
  const mine = cas.filter(ca => ca.subject === crl.issuer)
  if (mine.length === 0) throw UkaiError.badArgument(`the CRL was issued by '${crl.issuer}', not by this cluster's CA ('${cas.map(c => c.subject).join("', '")}')`)
  let good = false
  for (const ca of mine) {
    try { if (await crl.verify({ publicKey: ca })) { good = true; break } } catch { /* another key type: not this CA */ }
  }
  if (!good) throw UkaiError.badArgument(`the CRL's signature does not verify with the key of '${crl.issuer}' (forged, or signed by another CA of the same name)`)
  const serials = new Set<string>()
  for (const e of crl.entries) serials.add(normalizeSerial(e.serialNumber))
  return { number: crlNumberOf(crl), serials, issuer: crl.issuer, thisUpdate: crl.thisUpdate, pem: crlPem(crl) }
}
