// ukai ca init DIR; ukai cert issue --node ID | --agent HOST | --admin NAME | --tenant NAME;
// ukai cert revoke SERIAL | --cert FILE; ukai cert list. The CA itself is src/security/ca.ts.
import { Command } from 'commander'
import { UkaiError } from '../errors'
import type { Identity, Role } from '../storagenode/identity'
import { countOption } from './parse'
import { printJson, printTable } from './output'

// Loaded by the verbs that use it: @peculiar/x509 and its ASN.1 schemas take ~0.2 s (seconds on a
// busy host) to load, which every other `ukai` run would pay.
const loadCa = async (): Promise<typeof import('../security/ca')> => await import('../security/ca')

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
    .description('create a cluster CA in DIR: ca.crt, ca.key (mode 0600), revoked.txt')
    .option('--name <cn>', 'the CA\'s common name', 'UKAI cluster CA')
    .option('--json', 'print JSON')
    .action(async (dir: string, opts) => {
      const ca = await (await loadCa()).initCa(dir, { name: opts.name })
      if (opts.json === true) printJson(ca)
      else process.stdout.write(`CA created in ${ca.dir} (${ca.subject}, valid until ${ca.notAfter.toISOString()}); keep ca.key offline in production\n`)
    })

  const cert = program.command('cert').description('certificates of the cluster CA: one per node, agent, admin, tenant')
  cert.command('issue')
    .description('issue a certificate and key for one identity into DIR (ca.crt, tls.crt, tls.key mode 0600, revoked.txt)')
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
    .description('revoke a certificate (by SERIAL or --cert FILE): nodes refuse it within a second of seeing the new revoked.txt (copied into every identity dir the CA issued on this host; elsewhere copy it, or send SIGHUP after)')
    .option('--cert <file>', 'the certificate to revoke')
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (serial: string | undefined, opts) => {
      if ((serial === undefined) === (opts.cert === undefined)) throw UkaiError.badArgument('name the certificate to revoke: a SERIAL or --cert FILE (one of them)')
      const r = (await loadCa()).revokeCert(caDirOf(opts), { serial, certFile: opts.cert })
      if (opts.json === true) printJson(r)
      else process.stdout.write(`revoked ${r.serial}; revoked.txt copied to ${r.copiedTo.length} identity dirs\n`)
    })
  cert.command('list')
    .description('the certificates this CA issued')
    .option('--ca <dir>', CA_HELP)
    .option('--json', 'print JSON')
    .action(async (opts) => {
      const all = (await loadCa()).listIssued(caDirOf(opts))
      if (opts.json === true) printJson(all)
      else printTable(['SERIAL', 'ROLE', 'NAME', 'NOT AFTER', 'DIR'], all.map(e => [e.serial, e.role, e.name, e.notAfter, e.dir]))
    })
}
