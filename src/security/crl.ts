// The CA's certificate revocation list: `ukai cert revoke` signs a new X.509 CRL with the CA key,
// its CRL number one above the last (and above the one published in ZooKeeper), writes it to the
// CA dir (crl.pem, crl-number) and to every identity dir the CA issued into on this host; the
// CLI then publishes it to ZooKeeper (src/meta/crl-record.ts), which every node and agent
// follows (src/storagenode/revocation.ts verifies it). Signed with @peculiar/x509, as the
// certificates are (ca.ts says why).
//
// A CA dir from before CRLs holds revoked.txt: its serials are folded into the first CRL, so an
// upgrade loses no revocation (the nodes no longer read revoked.txt).
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { CRL_FILE, CRL_NUMBER_FILE, certificatesOf, crlNumberExtension, crlPem, verifyCrl, x509 } from '../storagenode/crl'
import { Identity, normalizeSerial } from '../storagenode/identity'
import { REVOKED_FILE } from '../storagenode/revocation'
import { CA_CERT_FILE, CERT_FILE } from '../storagenode/tls'
import { ALG, IssuedEntry, listIssued, loadCa, writeAtomic } from './ca'

// A CRL says when the next one is due; nodes do not refuse an overdue one (an old list is
// better than none), so this only informs other readers of the file (openssl crl -text).
const CRL_NEXT_UPDATE_DAYS = 3650
const DAY_MS = 86_400_000

export interface CaCrl { number: number, serials: Set<string>, pem: string | null }

// The CA dir's current revocation state: its CRL (verified against its own ca.crt), the serials
// of a pre-CRL revoked.txt, and the highest number it ever signed.
export async function readCaCrl (caDir: string): Promise<CaCrl> {
  caDir = path.resolve(caDir)
  const caPem = readCaCert(caDir)
  const serials = new Set<string>()
  let pem: string | null = null
  let number = 0
  const file = path.join(caDir, CRL_FILE)
  if (fs.existsSync(file)) {
    const crl = await verifyCrl(fs.readFileSync(file, 'utf8'), caPem).catch((err: Error) => { throw UkaiError.badArgument(`${file} is not a CRL of this CA: ${err.message}`) })
    for (const s of crl.serials) serials.add(s)
    pem = crl.pem
    number = crl.number
  }
  const counter = Number((readOrEmpty(path.join(caDir, CRL_NUMBER_FILE))).trim())
  if (Number.isSafeInteger(counter) && counter > number) number = counter
  for (const line of readOrEmpty(path.join(caDir, REVOKED_FILE)).split('\n')) {
    const word = line.trim().split(/\s+/)[0]
    if (word === undefined || word === '' || word.startsWith('#')) continue
    try { serials.add(normalizeSerial(word)) } catch { /* a comment */ }
  }
  return { number, serials, pem }
}

// What to revoke, named one of three ways. Each must be a certificate of this CA: an unknown
// serial or identity is refused before anything is signed or published.
export type RevokeTarget = { serial: string } | { certFile: string } | { identity: Identity }

export async function resolveRevocation (caDir: string, what: RevokeTarget): Promise<string[]> {
  caDir = path.resolve(caDir)
  const caPem = readCaCert(caDir)
  const issued = listIssued(caDir)
  if ('certFile' in what) {
    let cert: x509.X509Certificate
    try { cert = new x509.X509Certificate(fs.readFileSync(what.certFile, 'utf8')) } catch (err) { throw UkaiError.notFound(`cannot read certificate ${what.certFile}: ${(err as Error).message}`) }
    const cas = certificatesOf(caPem).filter(ca => ca.subject === cert.issuer)
    let ours = false
    for (const ca of cas) { if (await cert.verify({ publicKey: ca, signatureOnly: true }).catch(() => false)) ours = true }
    if (!ours) throw UkaiError.notFound(`${what.certFile} was not issued by the CA in ${caDir} (its issuer: '${cert.issuer}'): nothing to revoke here`)
    return [normalizeSerial(cert.serialNumber)]
  }
  if ('serial' in what) {
    const serial = normalizeSerial(what.serial)
    if (!issued.some(e => e.serial === serial)) throw UkaiError.notFound(`serial ${serial} was not issued by the CA in ${caDir} ('ukai cert list' shows what it issued): nothing revoked`)
    return [serial]
  }
  const mine = issued.filter(e => e.role === what.identity.role && e.name === what.identity.name)
  if (mine.length === 0) throw UkaiError.notFound(`the CA in ${caDir} issued no certificate to ${what.identity.role} ${what.identity.name} ('ukai cert list'): nothing revoked`)
  return [...new Set(mine.map(e => e.serial))]
}

// What ZooKeeper holds, verified with this CA: a CRL another copy of the CA dir published.
export interface PublishedCrl { number: number, serials: Set<string> }

// Signs the CA's next CRL: every serial revoked so far (in this CA dir and in the CRL published
// in ZooKeeper, so a second copy of the CA dir never un-revokes what the other revoked) plus
// `add`, numbered above both. Written to the CA dir only.
export async function issueCrl (caDir: string, add: string[], opts: { published?: PublishedCrl | null } = {}): Promise<{ number: number, pem: string, serials: string[] }> {
  caDir = path.resolve(caDir)
  const ca = await loadCa(caDir)
  const now = await readCaCrl(caDir)
  const old = now.pem === null ? new Map<string, Date>() : new Map(new x509.X509Crl(now.pem).entries.map(e => [normalizeSerial(e.serialNumber), e.revocationDate]))
  const serials = [...new Set([...now.serials, ...(opts.published?.serials ?? []), ...add.map(normalizeSerial)])].sort()
  const number = Math.max(now.number, opts.published?.number ?? 0) + 1
  const thisUpdate = new Date()
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate,
    nextUpdate: new Date(thisUpdate.getTime() + CRL_NEXT_UPDATE_DAYS * DAY_MS),
    signingAlgorithm: ALG,
    signingKey: ca.key,
    extensions: [crlNumberExtension(number), await x509.AuthorityKeyIdentifierExtension.create(ca.cert)],
    entries: serials.map(s => ({ serialNumber: s, revocationDate: old.get(s) ?? thisUpdate }))
  })
  const pem = crlPem(crl)
  // The counter first: a crash between the two leaves a number that is only ever too high.
  writeAtomic(path.join(caDir, CRL_NUMBER_FILE), `${number}\n`, 0o644)
  writeAtomic(path.join(caDir, CRL_FILE), pem, 0o644)
  return { number, pem, serials }
}

// Copies the CRL into every identity dir this CA issued into that still exists on this host.
export function copyCrlToIdentityDirs (caDir: string, pem: string): string[] {
  caDir = path.resolve(caDir)
  const copiedTo: string[] = []
  for (const e of listIssued(caDir)) {
    if (e.dir === caDir || !fs.existsSync(path.join(e.dir, CERT_FILE)) || copiedTo.includes(e.dir)) continue
    writeAtomic(path.join(e.dir, CRL_FILE), pem, 0o644)
    copiedTo.push(e.dir)
  }
  return copiedTo
}

export interface Revoked { serials: string[], already: string[], crlNumber: number, pem: string, copiedTo: string[] }

// Revokes in the CA dir and this host's identity dirs (publishing is the caller's: it needs
// ZooKeeper; `published` is what it found there). Nothing new to revoke: no new CRL, the
// current one is handed back.
export async function revokeCert (caDir: string, what: RevokeTarget, opts: { published?: PublishedCrl | null } = {}): Promise<Revoked> {
  const serials = await resolveRevocation(caDir, what)
  const now = await readCaCrl(caDir)
  const fresh = serials.filter(s => !now.serials.has(s))
  const behind = opts.published != null && opts.published.number > now.number
  if (fresh.length === 0 && now.pem !== null && !behind) {
    return { serials, already: serials, crlNumber: now.number, pem: now.pem, copiedTo: copyCrlToIdentityDirs(caDir, now.pem) }
  }
  const crl = await issueCrl(caDir, serials, opts)
  return { serials, already: serials.filter(s => now.serials.has(s)), crlNumber: crl.number, pem: crl.pem, copiedTo: copyCrlToIdentityDirs(caDir, crl.pem) }
}

// A CRL as this CA verifies it; null when it is not one of this CA's (forged, another CA's).
export function crlVerifier (caDir: string): (pem: string) => Promise<PublishedCrl | null> {
  const caPem = readCaCert(path.resolve(caDir))
  return async (pem) => await verifyCrl(pem, caPem).then(c => ({ number: c.number, serials: c.serials }), () => null)
}

// `ukai cert list`: each certificate with whether the CA's CRL revokes it.
export async function listWithRevocation (caDir: string): Promise<{ crlNumber: number, certificates: Array<IssuedEntry & { revoked: boolean }> }> {
  const crl = await readCaCrl(caDir)
  return { crlNumber: crl.number, certificates: listIssued(caDir).map(e => ({ ...e, revoked: crl.serials.has(e.serial) })) }
}

function readCaCert (caDir: string): string {
  try {
    return fs.readFileSync(path.join(caDir, CA_CERT_FILE), 'utf8')
  } catch {
    throw UkaiError.notFound(`${caDir} holds no CA (${CA_CERT_FILE}): run 'ukai ca init ${caDir}'`)
  }
}

function readOrEmpty (file: string): string {
  try { return fs.readFileSync(file, 'utf8') } catch { return '' }
}
