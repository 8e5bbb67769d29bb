// libvirt itself: a libvirtd started by the test (no systemd) runs a domain whose disk is on the
// UKAI mount, and calls the installed hook with the arguments libvirt documents.
//
// The daemon runs in session mode as user `nobody`, with HOME and XDG_* dirs in a temp dir: its
// config, sockets, logs and domain definitions are private to the test. Its QEMU runs as nobody
// too, so the agent mounts with --allow-other (what QEMU as libvirt-qemu needs in production).
// libvirt looks for hooks only in $SYSCONFDIR/libvirt/hooks (session mode as well), so the hook is
// installed as /etc/libvirt/hooks/qemu.d/ukai-test-<pid> and removed at teardown; qemu.d/ has been
// read since libvirt 6.5, and Debian 12 ships 9.0.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { makeTempDir, processZkAuth, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { hookLog } from './helpers/libvirt'
import { qemuUnavailable } from './helpers/qemu'
import { identityDir } from './helpers/tls'

const NOBODY = 65534
const HOOKS_DIR = '/etc/libvirt/hooks'
const SOCKET_TIMEOUT_MS = 60_000

function libvirtUnavailable (): string | null {
  for (const bin of ['libvirtd', 'virsh']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} not found (Debian packages libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients; scripts/setup.sh installs them)`
  }
  if (process.getuid?.() !== 0) return 'needs root (to run libvirtd as nobody and to install the hook under /etc/libvirt/hooks)'
  return qemuUnavailable()
}

const why = libvirtUnavailable()
t.test('libvirtd runs a domain on the UKAI mount and calls the hook', { skip: why === null ? false : `libvirt cannot run here: ${why}` }, async (t) => {
  const zk = await startZk(t)
  await Promise.all(['a1', 'a2'].map(id => startNode(t, { zk, id, site: 'site-a' })))
  const a = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--allow-other'] })
  fs.chmodSync(a.dir, 0o755) // nobody (QEMU) must reach the mount point
  t.equal((await runCli(['disk', 'create', 'lv1', '--size', '16M', '--block-size', '1M'], { zk: zk.connectString })).code, 0)
  const disk = path.join(a.mountPoint, 'lv1')
  // The mount enforces owner and mode (default_permissions). libvirt's system daemon chowns an
  // image to its QEMU user itself; a session-mode libvirtd runs QEMU as its own user and changes
  // nothing, so give the image to that user, as an operator would (the owner is kept in ZooKeeper).
  fs.chownSync(disk, NOBODY, NOBODY)

  const dir = makeTempDir(t, 'libvirtd')
  fs.chmodSync(dir, 0o755)
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, LC_ALL: 'C' }
  for (const [k, sub] of [['HOME', 'home'], ['XDG_RUNTIME_DIR', 'run'], ['XDG_CONFIG_HOME', 'config'], ['XDG_CACHE_HOME', 'cache'], ['XDG_DATA_HOME', 'data']]) {
    env[k] = path.join(dir, sub)
    fs.mkdirSync(env[k] as string, { mode: 0o700 })
    fs.chownSync(env[k] as string, NOBODY, NOBODY)
  }
  // The hook runs as the daemon's user: its log must be writable by nobody.
  const logFile = path.join(dir, 'hook.log')
  fs.writeFileSync(logFile, '', { mode: 0o666 })
  fs.chmodSync(logFile, 0o666)
  const conf = path.join(dir, 'hook.conf')
  // So must its credentials be: the ZooKeeper credentials file and the agent's certificate, copied
  // for nobody (mode 0600, as a root libvirtd's hook reads root's own).
  const hookZkAuth = path.join(dir, 'zk-auth')
  fs.copyFileSync(processZkAuth().file, hookZkAuth)
  const hookTls = path.join(dir, 'tls')
  fs.cpSync(await identityDir({ role: 'agent', name: 'hv-a' }), hookTls, { recursive: true })
  for (const f of [hookZkAuth, hookTls, ...fs.readdirSync(hookTls).map(n => path.join(hookTls, n))]) fs.chownSync(f, NOBODY, NOBODY)
  const createdHooksDir = !fs.existsSync(HOOKS_DIR)
  fs.mkdirSync(HOOKS_DIR, { recursive: true })
  const name = `ukai-test-${process.pid}`
  const hookFile = path.join(HOOKS_DIR, 'qemu.d', name)
  t.teardown(() => {
    fs.rmSync(hookFile, { force: true })
    if (createdHooksDir) fs.rmSync(HOOKS_DIR, { recursive: true, force: true })
  })
  const inst = await runCli(['libvirt', 'install-hook', '--dir', HOOKS_DIR, '--name', name, '--config', conf, '--host', 'hv-a', '--mount', a.mountPoint, '--log', logFile, '--zk-auth', hookZkAuth, '--tls-dir', hookTls, '--json'], { zk: zk.connectString })
  t.equal(inst.code, 0, inst.stderr)
  const installed = JSON.parse(inst.stdout) as { path: string, layout: string, libvirtVersion: string }
  t.equal(installed.path, hookFile)
  t.equal(installed.layout, 'qemu.d', `libvirt ${installed.libvirtVersion}: installed under qemu.d/`)

  // libvirtd, session mode, as nobody; it reads the hooks when it starts.
  const daemonLog = fs.openSync(path.join(dir, 'libvirtd.log'), 'a')
  const daemon = spawn('libvirtd', ['--timeout', '0'], { env, uid: NOBODY, gid: NOBODY, stdio: ['ignore', daemonLog, daemonLog] })
  fs.closeSync(daemonLog)
  t.teardown(async () => {
    if (daemon.exitCode !== null || daemon.signalCode !== null) return
    const gone = new Promise(resolve => daemon.once('exit', resolve))
    daemon.kill('SIGTERM')
    await Promise.race([gone, new Promise(resolve => setTimeout(resolve, 10_000))])
    if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL')
  })
  const sock = path.join(env.XDG_RUNTIME_DIR as string, 'libvirt', 'libvirt-sock')
  const deadline = Date.now() + SOCKET_TIMEOUT_MS
  while (!fs.existsSync(sock)) {
    if (daemon.exitCode !== null || Date.now() > deadline) throw new Error(`libvirtd did not start: ${fs.readFileSync(path.join(dir, 'libvirtd.log'), 'utf8').slice(-2000)}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  const virsh = (...args: string[]): { code: number, out: string } => {
    const r = spawnSync('virsh', ['-c', 'qemu:///session', ...args], { env, uid: NOBODY, gid: NOBODY, encoding: 'utf8', timeout: 120_000 })
    return { code: r.status ?? -1, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() }
  }

  const xmlFile = path.join(dir, 'ukai-lv1.xml')
  fs.writeFileSync(xmlFile, `<domain type='qemu'>
  <name>ukai-lv1</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='${disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
`, { mode: 0o644 })
  const def = virsh('define', xmlFile)
  t.equal(def.code, 0, `virsh define: ${def.out}`)
  const start = virsh('start', 'ukai-lv1')
  t.equal(start.code, 0, `virsh start: ${start.out}`)
  t.match(virsh('domstate', 'ukai-lv1').out, /running/, 'the domain runs (QEMU opened its disk on the mount as nobody)')
  const info = await cliJson<{ openOn: string[] }>(['disk', 'info', 'lv1'], zk.connectString)
  t.same(info.openOn, ['hv-a'], 'the disk is open on hv-a')
  const destroy = virsh('destroy', 'ukai-lv1')
  t.equal(destroy.code, 0, `virsh destroy: ${destroy.out}`)
  t.equal(virsh('undefine', 'ukai-lv1').code, 0)

  const calls = hookLog(logFile).filter(l => l.msg === 'hook done').map(l => `${l.domain} ${l.op} ${l.subOp}`)
  t.same(calls, ['ukai-lv1 prepare begin', 'ukai-lv1 start begin', 'ukai-lv1 started begin', 'ukai-lv1 stopped end', 'ukai-lv1 release end'], 'libvirt called the hook at every step, in order')
  const lines = hookLog(logFile)
  t.ok(lines.some(l => l.op === 'prepare' && l.action === 'already-there' && l.disk === 'lv1'), 'prepare: lv1 is already at this host\'s site')
  t.ok(lines.some(l => l.op === 'release' && l.disk === 'lv1' && (l.lease === 'free' || l.lease === 'moved')), `release: the lease is not held here any more (${lines.find(l => l.op === 'release' && l.lease !== undefined)?.lease})`)
  t.ok(lines.every(l => l.level === undefined || (l.level as number) < 50), 'no errors in the hook log')
})
