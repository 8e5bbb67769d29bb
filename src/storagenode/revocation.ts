// The certificates the cluster CA revoked, as this process believes them: the newest CA-signed CRL
// (crl.ts) it was offered. Offered by two sources: its TLS dir's crl.pem (polled every
// CERT_POLL_INTERVAL_MS, and at once on SIGHUP) and ZooKeeper's copy (the daemon's watch,
// src/daemons/crl-follow.ts, calls offer()). Either way a CRL is believed only if its signature
// verifies with the CA in ca.crt and its CRL number is not lower than the highest this process
// ever accepted; anything else is refused, logged with the reason, and the list in force stays.
//
// The highest number is persisted in the TLS dir (crl-number), and a CRL accepted from
// ZooKeeper is written there too (crl.pem): after a restart the node starts from the newest list
// it knew, before ZooKeeper answers, and a host that can write ZooKeeper (every daemon host holds
// its credentials) cannot roll it back to an older genuine list. Whoever can write the TLS dir
// itself owns the node anyway (its key is there).
//
// revoked.txt (the plain list before CRLs) is no longer read: `ukai cert revoke` folds the serials
// of the CA dir's revoked.txt into its first CRL (src/security/crl.ts).
import fs from 'node:fs'
import path from 'node:path'
import type { Logger } from '../log'
import { silentLogger } from '../log'
import { CA_CERT_FILE, CERT_POLL_INTERVAL_MS, onSighup } from './tls'
import { CRL_FILE, CRL_NUMBER_FILE, VerifiedCrl, verifyCrl } from './crl'
import { normalizeSerial } from './identity'

// The plain list of serials before CRLs (read by the CA only, once, to fold it into a CRL).
export const REVOKED_FILE = 'revoked.txt'

export type CrlOutcome = { outcome: 'accepted' | 'same', number: number } | { outcome: 'refused', reason: string }

export class RevocationList {
  readonly dir: string
  private current: VerifiedCrl | null = null
  private highest: number
  private fileStamp = ''
  private chain: Promise<unknown> = Promise.resolve()
  private readonly timer: NodeJS.Timeout
  private readonly offHup: () => void
  private readonly listeners = new Set<() => void>()
  private persistWarned = false
  // The first look at the TLS dir's crl.pem: serve nothing before it (server.ts awaits it).
  readonly ready: Promise<void>
  accepted = 0
  refused = 0

  constructor (dir: string, private readonly log: Logger = silentLogger) {
    this.dir = path.resolve(dir)
    this.highest = this.readHighest()
    this.ready = this.reload()
    this.timer = setInterval(() => { this.reload().catch(err => this.log.error({ err: String(err) }, 'CRL reload failed')) }, CERT_POLL_INTERVAL_MS)
    this.timer.unref()
    this.offHup = onSighup(() => { this.reload().catch(err => this.log.error({ err: String(err) }, 'CRL reload failed')) })
    const legacy = path.join(this.dir, REVOKED_FILE)
    if (fs.existsSync(legacy) && !fs.existsSync(path.join(this.dir, CRL_FILE))) {
      this.log.warn({ file: legacy }, `${REVOKED_FILE} is no longer read: revocations travel as the CA's signed CRL (ukai cert revoke, or ukai cert publish-crl to publish the CA's current one)`)
    }
  }

  has (serial: string): boolean { return this.current?.serials.has(normalizeSerial(serial)) ?? false }
  // The CRL number in force (0: none yet).
  get number (): number { return this.current?.number ?? 0 }
  get size (): number { return this.current?.serials.size ?? 0 }
  // Told after every change of the list (the server ends the Io streams of revoked callers).
  onChange (fn: () => void): () => void { this.listeners.add(fn); return () => { this.listeners.delete(fn) } }

  // A CRL from `source` (for the log): believed if it verifies and is not older than what we hold.
  async offer (text: string | Buffer, source: string): Promise<CrlOutcome> {
    const run = this.chain.then(async () => await this.offerNow(text, source))
    this.chain = run.catch(() => {})
    return await run
  }

  // Re-reads crl.pem if it changed since the last look.
  async reload (): Promise<void> {
    const file = path.join(this.dir, CRL_FILE)
    let st: fs.Stats
    try { st = fs.statSync(file) } catch { return }  // none: the list in force stays
    const stamp = `${st.mtimeMs}:${st.size}:${st.ino}`
    if (stamp === this.fileStamp) return
    let text: string
    try { text = fs.readFileSync(file, 'utf8') } catch { return }  // retried next poll
    this.fileStamp = stamp
    await this.offer(text, `file ${file}`)
  }

  close (): void {
    clearInterval(this.timer)
    this.offHup()
  }

  private async offerNow (text: string | Buffer, source: string): Promise<CrlOutcome> {
    let crl: VerifiedCrl
    try {
      crl = await verifyCrl(text, fs.readFileSync(path.join(this.dir, CA_CERT_FILE), 'utf8'))
    } catch (err) {
      return this.refuse(source, (err as Error).message)
    }
    const floor = Math.max(this.current?.number ?? 0, this.highest)
    if (crl.number < floor) return this.refuse(source, `its CRL number ${crl.number} is lower than ${floor}, the highest this process accepted (an older list: a rollback)`)
    if (this.current !== null && crl.number === this.current.number) return { outcome: 'same', number: crl.number }
    this.current = crl
    this.accepted++
    if (crl.number > this.highest) {
      this.highest = crl.number
      this.persist(CRL_NUMBER_FILE, `${crl.number}\n`)
    }
    if (!source.startsWith('file ')) {
      this.persist(CRL_FILE, crl.pem)
      try { const st = fs.statSync(path.join(this.dir, CRL_FILE)); this.fileStamp = `${st.mtimeMs}:${st.size}:${st.ino}` } catch {}
    }
    this.log.info({ crlNumber: crl.number, revoked: crl.serials.size, source }, 'CRL accepted')
    for (const fn of this.listeners) fn()
    return { outcome: 'accepted', number: crl.number }
  }

  private refuse (source: string, reason: string): CrlOutcome {
    this.refused++
    this.log.warn({ source, reason, crlNumber: this.number }, `CRL refused: ${reason}; the CRL number ${this.number} stays in force`)
    return { outcome: 'refused', reason }
  }

  private readHighest (): number {
    const file = path.join(this.dir, CRL_NUMBER_FILE)
    let text: string
    try { text = fs.readFileSync(file, 'utf8') } catch { return 0 }
    const n = Number(text.trim())
    if (Number.isSafeInteger(n) && n >= 0) return n
    this.log.warn({ file, content: text.slice(0, 40) }, 'the highest accepted CRL number is unreadable: starting from 0')
    return 0
  }

  // tmp + rename in the TLS dir; a dir we cannot write is logged once (the list still works in
  // memory, but a restart would forget how high it was).
  private persist (name: string, text: string): void {
    const file = path.join(this.dir, name)
    const tmp = `${file}.${process.pid}.tmp`
    try {
      fs.writeFileSync(tmp, text, { mode: 0o644 })
      fs.renameSync(tmp, file)
    } catch (err) {
      try { fs.rmSync(tmp, { force: true }) } catch {}
      if (!this.persistWarned) this.log.warn({ file, err: String(err) }, 'cannot persist the CRL in the TLS dir: a restart starts from an older list')
      this.persistWarned = true
    }
  }
}
