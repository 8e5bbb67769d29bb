// How a `ukai` process finds its certificate (docs/security.md): `--tls-dir DIR`, else
// $UKAI_TLS_DIR, else DEFAULT_TLS_DIR for the admin CLI. Daemons need one explicitly (a node's or
// an agent's identity is never guessed). `--insecure` is the one way to run without TLS, and
// says so on stderr at start. Set once per process, before the verb runs (main.ts preAction).
import fs from 'node:fs'
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { createLogger } from '../log'
import { TLS_DIR_DEFAULT } from '../libvirt/hook-config'
import type { Role } from '../storagenode/identity'
import type { Logger } from '../log'
import { CA_CERT_FILE, CertificateFiles, openTlsDir, setClientTls } from '../storagenode/tls'
import { RevocationList } from '../storagenode/revocation'

export const DEFAULT_TLS_DIR = TLS_DIR_DEFAULT
export const TLS_DIR_ENV = 'UKAI_TLS_DIR'

export function addTlsOptions (program: Command): void {
  program
    .option('--tls-dir <dir>', `this process's certificate: DIR/${CA_CERT_FILE}, tls.crt, tls.key (default: $${TLS_DIR_ENV}, else ${DEFAULT_TLS_DIR} for admin verbs)`)
    .option('--insecure', 'talk to (daemons: serve) storage nodes without TLS or authorization: anyone who reaches a port reads and writes every disk')
  program.hook('preAction', (_program, action) => { setupClientTls(action) })
}

let opened: CertificateFiles | undefined

// The identity files of this process, opened once (daemons reuse them for their server).
export function processTlsFiles (): CertificateFiles | undefined { return opened }

function tlsDirOf (cmd: Command): { dir: string, from: string } | undefined {
  const o = cmd.optsWithGlobals() as { tlsDir?: string }
  if (o.tlsDir !== undefined) return { dir: o.tlsDir, from: '--tls-dir' }
  const env = process.env[TLS_DIR_ENV]
  if (env !== undefined && env !== '') return { dir: env, from: TLS_DIR_ENV }
  return undefined
}

// The certificate dir this process would use (null: --insecure), for settings written to a file
// (the libvirt hook's): --tls-dir, else $UKAI_TLS_DIR, else the default.
export function tlsDirSetting (cmd: Command): string | null {
  if (insecureOf(cmd)) return null
  return tlsDirOf(cmd)?.dir ?? DEFAULT_TLS_DIR
}

// The hook's own certificate (hook.conf `tls-dir`, or `insecure = yes`), set before it runs.
// A missing or unreadable dir fails only the calls to nodes, with the reason: the hook's
// ZooKeeper work (lease release, relocation records) still runs.
export function useTlsDir (dir: string | null): void {
  if (dir === null) { setClientTls({ kind: 'insecure' }); return }
  try {
    opened = openTlsDir(dir)
    setClientTls({ kind: 'tls', files: opened })
  } catch (err) {
    setClientTls({ kind: 'missing', why: `the hook's TLS dir ${dir} (hook.conf tls-dir): ${(err as Error).message}` })
  }
}

export function insecureOf (cmd: Command): boolean { return (cmd.optsWithGlobals() as { insecure?: boolean }).insecure === true }

function setupClientTls (action: Command): void {
  if (insecureOf(action)) {
    createLogger('ukai', { destination: 2 }).warn({ verb: action.name() }, 'INSECURE: --insecure given: storage node traffic is plaintext and unauthenticated (docs/security.md)')
    setClientTls({ kind: 'insecure' })
    return
  }
  const found = tlsDirOf(action) ?? (fs.existsSync(DEFAULT_TLS_DIR) ? { dir: DEFAULT_TLS_DIR, from: 'the default' } : undefined)
  if (found === undefined) {
    setClientTls({ kind: 'missing', why: `no TLS certificate for talking to storage nodes: pass --tls-dir DIR, set ${TLS_DIR_ENV}, or install one in ${DEFAULT_TLS_DIR} ('ukai cert issue --admin NAME --out DIR'); --insecure only for a cluster run without TLS` })
    return
  }
  if (!fs.existsSync(found.dir)) {
    // Verbs that talk only to ZooKeeper (or make the certificates) still run.
    setClientTls({ kind: 'missing', why: `TLS dir ${found.dir} (from ${found.from}) does not exist` })
    return
  }
  try {
    opened = openTlsDir(found.dir)
  } catch (err) {
    throw UkaiError.badArgument(`${(err as Error).message} (from ${found.from})`)
  }
  setClientTls({ kind: 'tls', files: opened })
}

// A daemon's TLS: its identity must be of `role` (and, for a node, name its id), and the CA's
// CRL from its TLS dir (and, once the daemon runs, from ZooKeeper). Null: --insecure.
export function daemonTls (cmd: Command, role: Role, name?: string, log?: Logger): { files: CertificateFiles, revoked: RevocationList } | null {
  if (insecureOf(cmd)) return null
  if (opened === undefined) {
    throw UkaiError.badArgument(`${cmd.name()} needs a certificate: --tls-dir DIR (or $${TLS_DIR_ENV}) with one issued by 'ukai cert issue --${role} ${name ?? 'NAME'}', or --insecure to run without TLS`)
  }
  const id = opened.identity
  if (id.role !== role || (name !== undefined && id.name !== name)) {
    throw UkaiError.badArgument(`${cmd.name()} needs the certificate of ${role} ${name ?? '…'}, but ${opened.dir} holds that of ${id.role} ${id.name}`)
  }
  return { files: opened, revoked: new RevocationList(opened.dir, log) }
}
