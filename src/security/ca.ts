// The cluster CA: `ukai ca init DIR`, `ukai cert issue`, `ukai cert revoke`. X.509 through
// @peculiar/x509 on Node's WebCrypto (ECDSA P-256, SHA-256): a maintained, pure TypeScript
// library, so issuing needs no child process and tests can make expired certificates (openssl
// 3.0's `x509 -req` cannot back-date one). A P-256 key pair takes well under a millisecond, an
// RSA-3072 one ~100 ms: `ukai dev up` issues a dozen.
//
// The CA dir: ca.crt, ca.key (0600), issued.txt (one line per certificate: serial, role, name,
// not-after, where it was written), and once something was revoked crl.pem and crl-number (the
// signed revocation list, src/security/crl.ts). An identity's dir (default CA_DIR/ROLE-NAME):
// ca.crt, tls.crt, tls.key (0600) and a copy of the CA's crl.pem when there is one.
import { randomBytes, webcrypto } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { CRL_FILE, x509 } from '../storagenode/crl'
import { Identity, checkIdentity, identityUri, normalizeSerial } from '../storagenode/identity'
import { CA_CERT_FILE, CERT_FILE, KEY_FILE } from '../storagenode/tls'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair

export const CA_KEY_FILE = 'ca.key'
export const ISSUED_FILE = 'issued.txt'
export const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const CA_VALID_DAYS = 3650
export const CERT_VALID_DAYS_DEFAULT = 365
const DAY_MS = 86_400_000
const KEY_MODE = 0o600
const DIR_MODE = 0o700

export interface CaInfo { dir: string, subject: string, notAfter: Date }

export async function initCa (dir: string, opts: { name?: string } = {}): Promise<CaInfo> {
  dir = path.resolve(dir)
  if (fs.existsSync(path.join(dir, CA_KEY_FILE))) throw UkaiError.alreadyExists(`${dir} already holds a CA (${CA_KEY_FILE}); a second would orphan every certificate it issued`)
  fs.mkdirSync(dir, { recursive: true, mode: DIR_MODE })
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const notBefore = new Date(Date.now() - DAY_MS)  // a little clock skew between hosts
  const notAfter = new Date(Date.now() + CA_VALID_DAYS * DAY_MS)
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: newSerial(),
    name: `CN=${opts.name ?? 'UKAI cluster CA'}, O=ukai`,
    notBefore,
    notAfter,
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  writeKey(path.join(dir, CA_KEY_FILE), await pemOfKey(keys.privateKey))
  writeAtomic(path.join(dir, CA_CERT_FILE), cert.toString('pem'), 0o644)
  return { dir, subject: cert.subject, notAfter }
}

export interface IssueOptions {
  outDir?: string          // default CA_DIR/ROLE-NAME
  validDays?: number
  notBefore?: Date         // tests: an expired certificate
  notAfter?: Date
}

export interface Issued { identity: Identity, serial: string, dir: string, notAfter: Date }

export async function issueCert (caDir: string, identity: Identity, opts: IssueOptions = {}): Promise<Issued> {
  caDir = path.resolve(caDir)
  checkIdentity(identity)
  const ca = await loadCa(caDir)
  const outDir = path.resolve(opts.outDir ?? path.join(caDir, `${identity.role}-${identity.name}`))
  const validDays = opts.validDays ?? CERT_VALID_DAYS_DEFAULT
  if (!(validDays > 0)) throw UkaiError.badArgument(`validity must be a positive number of days, got ${validDays}`)
  const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000)
  const notAfter = opts.notAfter ?? new Date(Date.now() + validDays * DAY_MS)
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']) as CryptoKeyPair
  const serial = newSerial()
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: `CN=${identity.name}, OU=${identity.role}, O=ukai`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      // Every identity both serves and calls (a node serves and pulls from peers).
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityUri(identity) }], true),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert)
    ]
  })
  fs.mkdirSync(outDir, { recursive: true, mode: DIR_MODE })
  // Key first, certificate last: a watcher (tls.ts) that sees the new certificate finds its key.
  writeKey(path.join(outDir, KEY_FILE), await pemOfKey(keys.privateKey))
  writeAtomic(path.join(outDir, CA_CERT_FILE), ca.cert.toString('pem'), 0o644)
  writeAtomic(path.join(outDir, CERT_FILE), cert.toString('pem'), 0o644)
  const crl = path.join(caDir, CRL_FILE)
  if (outDir !== caDir && fs.existsSync(crl)) writeAtomic(path.join(outDir, CRL_FILE), fs.readFileSync(crl, 'utf8'), 0o644)
  fs.appendFileSync(path.join(caDir, ISSUED_FILE), `${normalizeSerial(serial)} ${identity.role} ${identity.name} ${notAfter.toISOString()} ${outDir}\n`, { mode: 0o600 })
  return { identity, serial: normalizeSerial(serial), dir: outDir, notAfter }
}

export interface IssuedEntry { serial: string, role: string, name: string, notAfter: string, dir: string }

export function listIssued (caDir: string): IssuedEntry[] {
  let text = ''
  try { text = fs.readFileSync(path.join(path.resolve(caDir), ISSUED_FILE), 'utf8') } catch { return [] }
  return text.split('\n').filter(l => l.trim() !== '').map(l => {
    const [serial, role, name, notAfter, ...dir] = l.split(' ')
    return { serial, role, name, notAfter, dir: dir.join(' ') }
  })
}

export async function loadCa (caDir: string): Promise<{ cert: x509.X509Certificate, key: CryptoKey }> {
  let certPem: string
  let keyPem: string
  try {
    certPem = fs.readFileSync(path.join(caDir, CA_CERT_FILE), 'utf8')
    keyPem = fs.readFileSync(path.join(caDir, CA_KEY_FILE), 'utf8')
  } catch (err) {
    throw UkaiError.notFound(`${caDir} holds no CA (${CA_CERT_FILE} and ${CA_KEY_FILE}): run 'ukai ca init ${caDir}' (${(err as Error).message})`)
  }
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64')
  const key = await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign']) as CryptoKey
  return { cert: new x509.X509Certificate(certPem), key }
}

// A positive 127-bit serial (RFC 5280: unique per CA, at most 20 octets, positive).
function newSerial (): string {
  const b = randomBytes(16)
  b[0] = (b[0] & 0x7f) | 0x01
  return b.toString('hex')
}

async function pemOfKey (key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key))
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`
}

function writeKey (file: string, pem: string): void { writeAtomic(file, pem, KEY_MODE) }

// tmp + rename: a reader (a node reloading its files) never sees half a file.
export function writeAtomic (file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, text, { mode })
  fs.chmodSync(tmp, mode)
  fs.renameSync(tmp, file)
}
