// libvirt and NBD: the example domain (libvirt/examples/vm01-nbd.xml) validates against
// libvirt's schema; the hook recognises an NBD disk on an agent's socket (DIR/<disk>.sock, export
// = the disk) like a file on the mount and leaves snapshot exports, foreign sockets and TCP
// alone; `install-hook --nbd-dir` writes the setting; and a real hook call relocates a domain's
// NBD disk toward the host's site.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { parseDomain, ukaiDisks } from '../src/libvirt/domain'
import { formatHookConfig, parseHookConfig } from '../src/libvirt/hook-config'
import { cliJson, runCli } from './helpers/cli'
import { makeTempDir, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { hookLog, installHookFor, nbdDomain, runHookScript } from './helpers/libvirt'
import { waitForSocket } from './helpers/nbd'

const exec = promisify(execFile)
const EXAMPLE = path.join(__dirname, '..', 'libvirt', 'examples', 'vm01-nbd.xml')

t.test('the example domain', async (t) => {
  const dom = parseDomain(fs.readFileSync(EXAMPLE, 'utf8'))
  t.same(dom.disks.map(d => d.nbd), [{ socket: '/var/lib/ukai/nbd/vm01.sock', exportName: 'vm01' }], 'one NBD disk on the agent\'s socket')
  t.same(ukaiDisks(dom, [], ['/var/lib/ukai/nbd']).map(d => [d.disk, d.via, d.file, d.cache]), [['vm01', 'nbd', '/var/lib/ukai/nbd/vm01.sock', 'none']], 'a UKAI disk for the hook')
  t.same(ukaiDisks(dom, ['/var/lib/ukai/mnt']), [], 'not without the NBD directory configured')
  const xmllint = ['/usr/bin/xmllint', '/usr/local/bin/xmllint'].some(f => fs.existsSync(f))
  if (!xmllint || !fs.existsSync('/usr/bin/virt-xml-validate')) {
    t.comment('virt-xml-validate or xmllint (libxml2-utils) missing: schema check skipped')
    return
  }
  for (const f of [EXAMPLE, path.join(path.dirname(EXAMPLE), 'vm01.xml')]) {
    const r = await exec('virt-xml-validate', [f, 'domain'])
    t.match(r.stdout + r.stderr, /validates/, `${path.basename(f)} validates against libvirt's domain schema`)
  }
})

t.test('which NBD disks are UKAI disks', async (t) => {
  const dir = '/var/lib/ukai/nbd'
  const dom = parseDomain(nbdDomain('d', [
    { socket: `${dir}/a.sock`, exportName: 'a' },     // yes
    { socket: `${dir}/b.sock` },                      // yes: no name is the socket's default export
    { socket: `${dir}/c.sock`, exportName: '' },      // yes
    { socket: `${dir}/a.sock`, exportName: 'a@s1' },  // a snapshot: read-only, nothing to move
    { socket: `${dir}/e.sock`, exportName: 'other' }, // not what that socket serves
    { socket: '/run/other/f.sock', exportName: 'f' }, // another server's socket
    { socket: `${dir}/g`, exportName: 'g' },          // not DIR/<disk>.sock
    { host: '127.0.0.1', exportName: 'h' }            // TCP: not recognised
  ]))
  const refs = ukaiDisks(dom, ['/var/lib/ukai/mnt'], [dir + '/'])
  t.same(refs.map(r => `${r.via}:${r.disk}`), ['file:data1', 'nbd:a', 'nbd:b', 'nbd:c'], 'the file disk and the three NBD disks of the agent\'s sockets')
})

t.test('hook config: nbd-dir', async (t) => {
  const cfg = parseHookConfig('zk = 127.0.0.1:2181\nnbd-dir = /var/lib/ukai/nbd\nnbd-dir = /srv/nbd\n', 'test')
  t.same(cfg.nbdDirs, ['/var/lib/ukai/nbd', '/srv/nbd'])
  const text = formatHookConfig({ ...cfg })
  t.same(parseHookConfig(text, 'again').nbdDirs, cfg.nbdDirs, 'written and read back')
  t.same(parseHookConfig('', 'empty').nbdDirs, [], 'none by default')
})

t.test('a hook call relocates a domain\'s NBD disk toward the host\'s site', { skip: missingCli('libvirt') ?? false }, async (t) => {
  const zk = await startZk(t)
  await Promise.all([startNode(t, { zk, id: 'a1', site: 'site-a' }), startNode(t, { zk, id: 'b1', site: 'site-b' })])
  const dir = makeTempDir(t, 'nbd-hook')
  const nbdDir = path.join(dir, 'nbd')
  const b = await startAgent(t, { zk, host: 'hv-b', site: 'site-b', extraArgs: ['--nbd-dir', nbdDir] })
  const created = await runCli(['disk', 'create', 'vm01', '--size', '8M', '--replicas', '1', '--site', 'site-a'], { zk: zk.connectString })
  t.equal(created.code, 0, created.stderr)
  await waitForSocket(path.join(nbdDir, 'vm01.sock'))
  const hook = await installHookFor(dir, zk.connectString, 'hv-b', b.mountPoint, ['--nbd-dir', nbdDir])
  t.match(fs.readFileSync(hook.conf, 'utf8'), new RegExp(`nbd-dir = ${nbdDir}\\n`), 'install-hook wrote the nbd-dir line')

  const foreign = await runHookScript(hook.hook, ['web1', 'prepare', 'begin', '-'], nbdDomain('web1', [{ socket: '/run/other/vm01.sock', exportName: 'vm01' }]))
  t.same([foreign.code, foreign.stdout], [0, ''], 'a domain with a foreign NBD socket: exit 0, nothing on stdout')
  t.ok(hookLog(hook.log).some(l => l.domain === 'web1' && /no disk on a UKAI mount or NBD socket/.test(l.msg)), 'and logged as having no UKAI disk')

  const xml = fs.readFileSync(EXAMPLE, 'utf8').replaceAll('/var/lib/ukai/nbd/vm01.sock', path.join(nbdDir, 'vm01.sock'))
  const run = await runHookScript(hook.hook, ['vm01', 'prepare', 'begin', '-'], xml)
  t.same([run.code, run.stdout], [0, ''], 'prepare begin: exit 0, nothing on stdout')
  t.ok(hookLog(hook.log).some(l => l.domain === 'vm01' && l.action === 'started' && /relocating vm01 toward site-b/.test(l.msg)), 'the hook started relocating vm01 toward site-b')
  const status = await cliJson<Array<{ state: string }>>(['relocate', 'status', 'vm01'], zk.connectString)
  t.equal(status.length, 1, 'a relocation record exists for vm01')
})
