// What libvirt and QEMU do to a disk file, on a real mount: extended attributes
// (trusted.libvirt.security.*), chown/chmod kept with the disk and enforced by the kernel,
// allow_other for the libvirt-qemu user, and OFD locks (QEMU's image locking).
import { execFile, spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { startAgent, startCluster, type AgentFixture } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { cliMainPath, daemonEnv } from '../src/dev/processes'

const exec = promisify(execFile)
const PROBE = path.join(__dirname, 'helpers', 'fs-probe.py')
// Debian's python3: readable by any user (a pyenv shim under /root is not).
const PYTHON = '/usr/bin/python3'
const NOBODY = 65534
const XATTR_CREATE = 1
const XATTR_REPLACE = 2

interface Probe { ok: boolean, errno?: string, value?: string, names?: string[], uid?: number, gid?: number, mode?: number, data?: string, written?: number, first?: string, whileHeld?: string, afterUnlock?: string }

// Runs fs-probe.py, as root or (asUser) as nobody:nogroup with no supplementary groups.
async function probe (args: string[], asUser?: number): Promise<Probe> {
  const argv = asUser === undefined
    ? [PYTHON, PROBE, ...args]
    : ['setpriv', `--reuid=${asUser}`, `--regid=${asUser}`, '--clear-groups', PYTHON, PROBE, ...args]
  const { stdout } = await exec(argv[0], argv.slice(1))
  return JSON.parse(stdout) as Probe
}

const hex = (s: string | Buffer): string => Buffer.from(s).toString('hex')

const noPython = fs.existsSync(PYTHON) ? false : `${PYTHON} is missing (Debian python3)`
const noAttrTools = spawnSync('getfattr', ['--version']).status === 0 ? false : 'getfattr/setfattr missing (Debian attr)'

t.test('libvirt surface of the mount', { skip: noPython }, async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 1 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const b = c.agent('site-b')
  const res = await runCli(['disk', 'create', 'vm1', '--size', '8M', '--block-size', '1M', '--replicas', '1', '--site', 'site-a'], { zk })
  t.equal(res.code, 0, res.stderr)
  const onA = path.join(a.mountPoint, 'vm1')
  const onB = path.join(b.mountPoint, 'vm1')

  t.test('extended attributes: stored with the disk, seen on every mount', { skip: noAttrTools }, async (t) => {
    const name = 'trusted.libvirt.security.dac'
    await exec('setfattr', ['-n', name, '-v', '+0:+0', onA])
    await exec('setfattr', ['-n', 'trusted.libvirt.security.ref_dac', '-v', '1', onA])
    const { stdout } = await exec('getfattr', ['-n', name, '--only-values', onB])
    t.equal(stdout, '+0:+0', 'setfattr on A, getfattr on B')
    const dump = await exec('getfattr', ['-d', '-m', '-', onA])
    t.match(dump.stdout, /trusted\.libvirt\.security\.dac="\+0:\+0"/, 'getfattr -d lists it')
    t.match(dump.stdout, /trusted\.libvirt\.security\.ref_dac="1"/, 'and the other one')
    t.same((await probe(['list', onB])).names, ['trusted.libvirt.security.dac', 'trusted.libvirt.security.ref_dac'], 'listxattr on B')

    // Values longer than the kernel's first guess: listxattr/getxattr answer ERANGE, the caller
    // (python's os.getxattr, like getfattr) asks again with the right size and gets every byte.
    const long = Buffer.alloc(3000)
    for (let i = 0; i < long.length; i++) long[i] = (i * 7) & 0xff
    t.ok((await probe(['set', onA, 'user.long', long.toString('hex'), '0'])).ok, 'a 3000-byte binary value')
    t.equal((await probe(['get', onB, 'user.long'])).value, long.toString('hex'), 'reads back byte for byte on B')

    await a.restart()
    t.equal((await exec('getfattr', ['-n', name, '--only-values', onA])).stdout, '+0:+0', 'still there after the agent restarted')
  })

  t.test('extended attributes: errno semantics', async (t) => {
    t.same(await probe(['get', onA, 'user.missing']), { ok: false, errno: 'ENODATA' }, 'missing: ENODATA (ENOATTR)')
    t.same(await probe(['remove', onA, 'user.missing']), { ok: false, errno: 'ENODATA' }, 'removing a missing one: ENODATA')
    t.ok((await probe(['set', onA, 'user.k', hex('v1'), String(XATTR_CREATE)])).ok, 'XATTR_CREATE of a new one')
    t.same(await probe(['set', onA, 'user.k', hex('v2'), String(XATTR_CREATE)]), { ok: false, errno: 'EEXIST' }, 'XATTR_CREATE of an existing one: EEXIST')
    t.same(await probe(['set', onA, 'user.nope', hex('v'), String(XATTR_REPLACE)]), { ok: false, errno: 'ENODATA' }, 'XATTR_REPLACE of a missing one: ENODATA')
    t.ok((await probe(['set', onA, 'user.k', hex('v3'), String(XATTR_REPLACE)])).ok, 'XATTR_REPLACE of an existing one')
    t.equal((await probe(['get', onB, 'user.k'])).value, hex('v3'), 'replaced value, seen on B')
    t.ok((await probe(['set', onA, 'user.empty', '', '0'])).ok, 'an empty value')
    t.equal((await probe(['get', onA, 'user.empty'])).value, '', 'reads back empty, not missing')
    t.same(await probe(['set', onA, 'user.big', 'ab'.repeat(4097), '0']), { ok: false, errno: 'E2BIG' }, 'a value over 4 KiB: E2BIG')
    for (let i = 0; i < 3; i++) t.ok((await probe(['set', onA, `user.fill${i}`, 'cd'.repeat(4000), '0'])).ok, `user.fill${i}: 4000 bytes`)
    t.same(await probe(['set', onA, 'user.fill3', 'cd'.repeat(4000), '0']), { ok: false, errno: 'ENOSPC' }, 'over 16 KiB in all: ENOSPC')
    // user::rw- user:nobody:r-- group::r-- mask::r-- other::--- (the kernel's xattr form)
    const acl = '02000000' + '01000600ffffffff' + '02000400feff0000' + '04000400ffffffff' + '10000400ffffffff' + '20000000ffffffff'
    t.same(await probe(['set', onA, 'system.posix_acl_access', acl, '0']), { ok: false, errno: 'EOPNOTSUPP' }, 'POSIX ACLs: EOPNOTSUPP (libfuse2 cannot have them enforced)')
    t.ok((await probe(['remove', onA, 'user.k'])).ok, 'removexattr')
    t.same(await probe(['get', onB, 'user.k']), { ok: false, errno: 'ENODATA' }, 'gone on B too')
    for (let i = 0; i < 3; i++) await probe(['remove', onA, `user.fill${i}`])
    const rec = (await cliJson<Array<{ name: string, xattrs?: Record<string, string> }>>(['disk', 'list'], zk)).find(d => d.name === 'vm1')
    t.ok(rec?.xattrs?.['trusted.libvirt.security.dac'] !== undefined, 'kept in the disk record in ZooKeeper')
  })

  t.test('owner and mode: stored with the disk, shown by every mount', async (t) => {
    const before = await probe(['stat', onA])
    t.same({ uid: before.uid, gid: before.gid, mode: before.mode }, { uid: 0, gid: 0, mode: 0o660 }, 'a disk nobody chowned: the agent user (root), 0660')
    await fs.promises.chown(onA, NOBODY, NOBODY)
    await fs.promises.chmod(onA, 0o600)
    for (const [where, p] of [['A', onA], ['B', onB]]) {
      const st = await probe(['stat', p])
      t.same({ uid: st.uid, gid: st.gid, mode: st.mode }, { uid: NOBODY, gid: NOBODY, mode: 0o600 }, `mount ${where} shows nobody:nogroup 0600`)
    }
    const info = await runCli(['disk', 'info', 'vm1'], { zk })
    t.match(info.stdout, /file owner\s+uid 65534, gid 65534, mode 0600/, 'ukai disk info shows the owner and mode')
    t.match(info.stdout, /xattrs\s+.*trusted\.libvirt\.security\.dac/, 'and the xattr names')
    await b.restart()
    const st = await probe(['stat', onB])
    t.same({ uid: st.uid, gid: st.gid, mode: st.mode }, { uid: NOBODY, gid: NOBODY, mode: 0o600 }, 'and so after its agent restarted')
    await fs.promises.chown(onA, 0, 0)
    await fs.promises.chmod(onA, 0o660)
  })

  t.test('allow_other: another user reaches the disks only with it; modes are enforced', async (t) => {
    const other = await startAgent(t, { zk, host: 'hv-other', site: 'site-a', extraArgs: ['--allow-other'] })
    openPathTo(other)
    openPathTo(a)
    const viaOther = path.join(other.mountPoint, 'vm1')
    const data = hex('written by nobody')
    t.same(await probe(['stat', onA], NOBODY), { ok: false, errno: 'EACCES' }, 'without allow_other: nobody cannot even stat')
    t.same(await probe(['write', viaOther, '4096', data], NOBODY), { ok: false, errno: 'EACCES' }, 'with allow_other, root:root 0660: EACCES for nobody')
    await fs.promises.chown(viaOther, NOBODY, NOBODY)
    t.same(await probe(['write', viaOther, '4096', data], NOBODY), { ok: true, written: data.length / 2 }, 'owned by nobody: nobody writes')
    t.same(await probe(['read', viaOther, '4096', String(data.length / 2)], NOBODY), { ok: true, data }, 'and reads it back')
    t.equal((await fs.promises.readFile(onB)).subarray(4096, 4096 + data.length / 2).toString('hex'), data, 'root on another host reads what nobody wrote')
    await fs.promises.chmod(viaOther, 0o400)
    t.same(await probe(['write', viaOther, '0', data], NOBODY), { ok: false, errno: 'EACCES' }, 'mode 0400: the kernel refuses nobody\'s write')
    t.same(await probe(['read', viaOther, '4096', '4'], NOBODY), { ok: true, data: data.slice(0, 8) }, 'but lets it read')
    t.same(await probe(['set', viaOther, 'user.x', hex('1'), '0'], NOBODY), { ok: false, errno: 'EACCES' }, 'nor set user xattrs without write permission')
    await fs.promises.chown(viaOther, 0, 0)
    await fs.promises.chmod(viaOther, 0o660)
    t.same(await probe(['read', viaOther, '0', '4'], NOBODY), { ok: false, errno: 'EACCES' }, 'chowned back to root:root 0660: EACCES again')
  })

  t.test('--allow-other by a user other than root needs user_allow_other: a clear refusal', async (t) => {
    const mnt = path.join(path.dirname(a.mountPoint), 'nobody-mnt')
    const conf = fs.readFileSync('/etc/fuse.conf', 'utf8')
    const r = spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, cliMainPath(), 'mount', mnt, '--site', 'site-a', '--allow-other', '--zk', zk],
      { env: daemonEnv(), encoding: 'utf8', timeout: 30_000 })
    if (/^\s*user_allow_other\s*$/m.test(conf)) { t.comment('this host allows it in /etc/fuse.conf: nothing to refuse'); return }
    t.equal(r.status, 2, 'exit 2 (bad argument)')
    t.match(r.stderr, /needs a line 'user_allow_other' in \/etc\/fuse\.conf/, r.stderr.trim())
    t.notOk(fs.existsSync(mnt), 'nothing was mounted or created')
  })

  t.test('OFD locks: conflict on one mount, local to it', async (t) => {
    const same = await probe(['ofd', onA, onA])
    t.same(same, { ok: true, first: 'locked', whileHeld: 'EAGAIN', afterUnlock: 'locked' }, 'two opens on one mount: EAGAIN while held, granted after unlock')
    const across = await probe(['ofd', onA, onB])
    t.same(across, { ok: true, first: 'locked', whileHeld: 'locked', afterUnlock: 'locked' }, 'a lock on mount A does not reach mount B (another host): the lease is the cluster-wide guard')
  })

  const noQemu = spawnSync('qemu-io', ['--version']).status === 0 && spawnSync('qemu-img', ['--version']).status === 0 ? false : 'qemu-io/qemu-img missing (Debian qemu-utils)'
  t.test('QEMU image locking on the mount', { skip: noQemu }, async (t) => {
    const holder = spawn('qemu-io', ['-f', 'raw', onA], { stdio: ['pipe', 'pipe', 'pipe'] })
    t.teardown(() => { if (holder.exitCode === null) holder.kill('SIGKILL') })
    let out = ''
    holder.stdout.on('data', (d: Buffer) => { out += d.toString() })
    holder.stdin.write('read 0 512\n')
    for (let i = 0; i < 100 && !out.includes('read 512/512'); i++) await new Promise(resolve => setTimeout(resolve, 100))
    t.match(out, /read 512\/512/, 'qemu-io has the image open (and its locks)')
    // convert wants the source unchanging: it refuses to share "write" with a writer.
    const dir = fs.mkdtempSync(path.join(path.dirname(a.mountPoint), 'convert-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const convert = async (src: string, ...opts: string[]): Promise<string | null> =>
      await exec('qemu-img', ['convert', ...opts, '-f', 'raw', '-O', 'raw', src, path.join(dir, 'out.raw')]).then(() => null, (e: { stderr: string }) => e.stderr)
    const locked = await convert(onA)
    t.match(locked, /Failed to get shared "write" lock/, 'qemu-img convert without -U refuses while qemu-io holds the image')
    t.equal(await convert(onA, '-U'), null, 'with -U (force share) it works')
    t.equal(await convert(onB), null, 'on another host\'s mount the lock is not seen')
    holder.stdin.end('quit\n')
    await new Promise(resolve => holder.once('exit', resolve))
    t.equal(await convert(onA), null, 'after qemu-io quit, convert works without -U')
  })
})

// The temp dirs are 0700 (mkdtemp): let other users walk to the mount point.
function openPathTo (agent: AgentFixture): void {
  fs.chmodSync(agent.dir, 0o755)
}
