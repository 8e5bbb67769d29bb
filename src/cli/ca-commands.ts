// ukai ca init DIR; ukai cert issue --node ID | --agent HOST | --admin NAME | --tenant NAME;
// ukai cert revoke SERIAL | --cert FILE | --ROLE NAME; ukai cert publish-crl; ukai cert list. The
// CA itself is src/security/ca.ts, its CRL src/security/crl.ts, the CRL's znode src/meta/crl-record.ts.
import { Command } from 'commander'
import { UkaiError } from '../errors'
import { publishCrlRecord, readCrlRecord } from '../meta/crl-record'
import type { MetaStore } from '../meta/store'
import type { Identity, Role } from '../storagenode/identity'
import type { PublishedCrl, RevokeTarget, Revoked } from '../security/crl'
import { withMeta } from './context'
import { countOption } from './parse'
import { printJson, printTable } from './output'

// Loaded by the verbs that use it: @peculiar/x509 and its ASN.1 schemas take ~0.2 s (seconds on a
// busy host) to load, which every other `ukai` run would pay.
const loadCa = async (): Promise<typeof import('../security/ca')> => await import('../security/ca')
const loadCrl = async (): Promise<typeof import('../security/crl')> => await import('../security/crl')

export const CA_DIR_ENV = 'UKAI_CA_DIR'
export const DEFAULT_CA_DIR = '/etc/ukai/ca'
const CA_HELP = `the CA dir (default: $${CA_DIR_ENV}, else ${DEFAULT_CA_DIR})`

function caDirOf (opts: { ca?: string }): string {
  return opts.ca ?? (process.env[CA_DIR_ENV] !== undefined && process.env[CA_DIR_ENV] !== '' ? process.env[CA_DIR_ENV] as string : DEFAULT_CA_DIR)
}

export function caCommands (program: Command): void {
  program.command('ca')
    .description('the cluster certificate authority (docs/security.md)')
    .command('init <dir>')
    .description('create a cluster CA in DIR: ca.crt, ca.key (mode 0600)')
    .option('--name <cn>', 'the CA\'s common name', 'UKAI cluster CA')
    .option('--json', 'print JSON')
    .action(async (dir: string, opts) => {
      const ca = await (await loadCa()).initCa(dir, { name: opts.name })
      if (opts.json === true) printJson(ca)
      else process.stdout.write(`CA created in ${ca.dir} (${ca.subject}, valid until ${ca.notAfter.toISOString()}); keep ca.key offline in production\n`)
    })

  const cert = program.command('cert').description('certificates of the cluster CA: one per node, agent, admin, tenant')
  cert.command('issue')
    .description('issue a certificate and key for one identity into DIR (ca.crt, tls.crt, tls.key mode 0600, and the CA\'s crl.pem when there is one)')
    .option('--node <id>', 'a storage node (its id)')
    .option('--agent <host>', 'a hypervisor agent (its host name)')
    .option('--admin <name>', 'an administrator (the CLI)')
    .option('--tenant <name>', 'a tenant')
    .option('--out <dir>', 'where to write it (default: CA_DIR/ROLE-NAME)')
    .option('--days <n>', 'validity in days', countOption('--days', 1, 36500), 365)
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const given = (['node', 'agent', 'admin', 'tenant'] as Role[]).filter(r => opts[r] !== undefined)
      if (given.length !== 1) throw UkaiError.badArgument('name exactly one identity: --node ID, --agent HOST, --admin NAME or --tenant NAME')
      const identity: Identity = { role: given[0], name: opts[given[0]] }
      const issued = await (await loadCa()).issueCert(caDirOf(opts), identity, { outDir: opts.out, validDays: opts.days })
      if (opts.json === true) printJson(issued)
      else process.stdout.write(`${identity.role} ${identity.name}: serial ${issued.serial}, valid until ${issued.notAfter.toISOString()}, in ${issued.dir}\n`)
    })
  cert.command('revoke [serial]')
    .description('revoke a certificate (by SERIAL, --cert FILE, or every certificate of one identity): signs the CA\'s next CRL, writes it to the CA dir and this host\'s identity dirs, and publishes it in ZooKeeper, which every node and agent follows (refused within seconds, cluster-wide)')
    .option('--cert <file>', 'the certificate to revoke')
    .option('--node <id>', 'every certificate issued to this storage node')
    .option('--agent <host>', 'every certificate issued to this agent')
    .option('--admin <name>', 'every certificate issued to this admin')
    .option('--tenant <name>', 'every certificate issued to this tenant')
    .option('--no-publish', 'only sign and write the CRL (an offline CA host); publish it later with \'ukai cert publish-crl\'')
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (serial: string | undefined, opts, cmd: Command) => {
      const target = revokeTarget(serial, opts)
      const crl = await loadCrl()
      const caDir = caDirOf(opts)
      await crl.resolveRevocation(caDir, target)  // an unknown serial or identity: refused before anything is signed
      if (opts.publish === false) {
        const r = await crl.revokeCert(caDir, target)
        printRevoked({ ...r, published: false }, opts.json === true)
        return
      }
      let signed = false
      await withMeta(cmd, async (meta) => {
        const verify = crl.crlVerifier(caDir)
        const found = await readCrlRecord(meta)
        const published = found?.rec == null ? null : await verify(found.rec.pem)
        const r = await crl.revokeCert(caDir, target, { published })
        signed = true
        const outcome = await publishOrSay(meta, caDir, r.crlNumber, r.pem, verify)
        printRevoked({ ...r, published: outcome }, opts.json === true)
      }).catch((err: UkaiError) => {
        if (signed || err.code === undefined) throw err
        throw new UkaiError(err.code, `${err.message} (nothing revoked: the CRL is published in ZooKeeper as it is signed; on a CA host without ZooKeeper, --no-publish, then 'ukai cert publish-crl' elsewhere)`)
      })
    })
  cert.command('publish-crl')
    .description('publish the CA dir\'s current CRL in ZooKeeper (after \'cert revoke --no-publish\', or to restore the znode)')
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (opts, cmd: Command) => {
      const crl = await loadCrl()
      const caDir = caDirOf(opts)
      const now = await crl.readCaCrl(caDir)
      if (now.pem === null) throw UkaiError.notFound(`${caDir} holds no CRL yet: nothing was revoked ('ukai cert revoke' makes one)`)
      const pem = now.pem
      const outcome = await withMeta(cmd, async (meta) => await publishOrSay(meta, caDir, now.number, pem, crl.crlVerifier(caDir)))
      const copiedTo = crl.copyCrlToIdentityDirs(caDir, pem)
      if (opts.json === true) printJson({ crlNumber: now.number, published: outcome, copiedTo })
      else process.stdout.write(`CRL number ${now.number} ${outcome === 'same' ? 'was already' : 'is now'} published in ZooKeeper; copied to ${copiedTo.length} identity dirs\n`)
    })
  cert.command('list')
    .description('the certificates this CA issued, whether its CRL revokes each, and the CRL number')
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const all = await (await loadCrl()).listWithRevocation(caDirOf(opts))
      if (opts.json === true) { printJson(all); return }
      printTable(['SERIAL', 'ROLE', 'NAME', 'NOT AFTER', 'REVOKED', 'DIR'], all.certificates.map(e => [e.serial, e.role, e.name, e.notAfter, e.revoked ? 'yes' : 'no', e.dir]))
      process.stdout.write(all.crlNumber === 0 ? 'no CRL yet (nothing revoked)\n' : `CRL number ${all.crlNumber}\n`)
    })
}

function revokeTarget (serial: string | undefined, opts: Record<string, string | undefined>): RevokeTarget {
  const roles = (['node', 'agent', 'admin', 'tenant'] as Role[]).filter(r => opts[r] !== undefined)
  const named = (serial !== undefined ? 1 : 0) + (opts.cert !== undefined ? 1 : 0) + roles.length
  if (named !== 1) throw UkaiError.badArgument('name the certificate to revoke one way: a SERIAL, --cert FILE, or one of --node ID, --agent HOST, --admin NAME, --tenant NAME')
  if (serial !== undefined) return { serial }
  if (opts.cert !== undefined) return { certFile: opts.cert }
  return { identity: { role: roles[0], name: opts[roles[0]] as string } }
}

// Publishes, or says what state it left: the CRL is in the CA dir, not yet in ZooKeeper.
async function publishOrSay (meta: MetaStore, caDir: string, crlNumber: number, pem: string, verify: (pem: string) => Promise<PublishedCrl | null>): Promise<'published' | 'same'> {
  try {
    return (await publishCrlRecord(meta, { crlNumber, pem }, async (p) => (await verify(p))?.number ?? null)).outcome
  } catch (err) {
    const e = err as UkaiError
    throw new UkaiError(e.code ?? 'INTERNAL', `CRL number ${crlNumber} is in ${caDir} but was not published in ZooKeeper: ${e.message}; run 'ukai cert publish-crl' once that is fixed`)
  }
}

function printRevoked (r: Revoked & { published: 'published' | 'same' | false }, json: boolean): void {
  if (json) { printJson({ serial: r.serials[0], serials: r.serials, alreadyRevoked: r.already, crlNumber: r.crlNumber, published: r.published, copiedTo: r.copiedTo }); return }
  const fresh = r.serials.filter(s => !r.already.includes(s))
  const what = fresh.length > 0 ? `revoked ${fresh.join(', ')}` : `${r.serials.join(', ')} already revoked`
  const where = r.published === false ? 'not published (--no-publish): run \'ukai cert publish-crl\' on a host that reaches ZooKeeper' : r.published === 'same' ? 'already in ZooKeeper' : 'published in ZooKeeper'
  process.stdout.write(`${what}; CRL number ${r.crlNumber}, ${where}; copied to ${r.copiedTo.length} identity dirs\n`)
}
