// ZooKeeper locked down (issue 12 part 2): every znode UKAI creates carries a digest ACL for the
// cluster's credentials only. A raw ZooKeeper client without them, or with a wrong password,
// can neither read (the nodes-alive local-read token is a secret) nor create, change, delete or
// re-ACL anything under /ukai — checked on every kind of znode, and that nothing changed. The
// daemons and the CLI work with the credentials file; a readable file and a missing one are
// refused with a clear message; --insecure-zk works, world-open, and says so.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import zookeeper from 'node-zookeeper-client'
import { paths } from '../src/meta/schema'
import { zkDigestId } from '../src/meta/credentials'
import { makeTempDir, processZkAuth, startCluster, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { cliMainPath, daemonEnv, startStorageNode } from '../src/dev/processes'
import { spawnSync } from 'node:child_process'

const CONNECT_TIMEOUT_MS = 10_000

async function rawClient (t: { teardown: (fn: () => void) => void }, connectString: string, auth?: string): Promise<zookeeper.Client> {
  const client = zookeeper.createClient(connectString, { sessionTimeout: 5_000, retries: 0 })
  if (auth !== undefined) client.addAuthInfo('digest', Buffer.from(auth))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { client.close(); reject(new Error(`no ZooKeeper session after ${CONNECT_TIMEOUT_MS} ms`)) }, CONNECT_TIMEOUT_MS)
    client.once('connected', () => { clearTimeout(timer); resolve() })
    client.connect()
  })
  t.teardown(() => client.close())
  return client
}

// The ZooKeeper error code a call ended with (0: it succeeded).
function code (fn: (cb: (err: any, ...res: any[]) => void) => void): Promise<number> {
  return new Promise((resolve) => fn((err) => resolve(err == null ? 0 : (typeof err.getCode === 'function' ? err.getCode() : -9999))))
}

const get = (c: zookeeper.Client, p: string): Promise<Buffer> => new Promise((resolve, reject) => c.getData(p, (err, data) => err != null ? reject(err) : resolve(data ?? Buffer.alloc(0))))
const children = (c: zookeeper.Client, p: string): Promise<string[]> => new Promise((resolve, reject) => c.getChildren(p, (err, ch) => err != null ? reject(err) : resolve(ch)))
const getAcl = (c: zookeeper.Client, p: string): Promise<zookeeper.ACL[]> => new Promise((resolve, reject) => c.getACL(p, (err, acls) => err != null ? reject(err) : resolve(acls)))

// Every znode under ROOT, read with the cluster's credentials.
async function tree (c: zookeeper.Client, root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  const walk = async (p: string): Promise<void> => {
    out.set(p, (await get(c, p)).toString('base64'))
    for (const ch of await children(c, p)) await walk(`${p}/${ch}`)
  }
  await walk(root)
  return out
}

t.test('without the cluster\'s credentials nothing under /ukai can be read, created, changed, deleted or re-ACLed', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agents: true })
  const zks = c.zk.connectString
  // The CLI and both daemons work with the credentials file: a disk written through the mount.
  const created = await runCli(['disk', 'create', 'vm1', '--size', '8M', '--block-size', '1M', '--site', 'site-a', '--replicas', '1'], { zk: zks })
  t.equal(created.code, 0, created.stderr)
  const data = Buffer.alloc(1 << 20, 0x5a)
  const fd = fs.openSync(path.join(c.agents[0].mountPoint, 'vm1'), 'r+')
  fs.writeSync(fd, data, 0, data.length, 0)
  fs.fsyncSync(fd)
  fs.closeSync(fd)
  t.ok(fs.readFileSync(path.join(c.agents[0].mountPoint, 'vm1')).subarray(0, data.length).equals(data), 'a disk created by the CLI is written and read back through the mount')
  const cmd = await runCli(['snapshot', 'create', 'vm1@s1'], { zk: zks })
  t.equal(cmd.code, 0, `a snapshot (an ephemeral request the agent answers): ${cmd.stderr}`)

  const auth = processZkAuth()
  const owner = await rawClient(t, zks, `${auth.user}:${auth.password}`)
  const before = await tree(owner, paths.root)
  const nodeAlive = paths.nodeAlive('a1')
  t.ok(before.has(nodeAlive), 'the node is alive (its ephemeral exists)')
  t.match(Buffer.from(before.get(nodeAlive) ?? '', 'base64').toString(), /localReadToken/, 'nodes-alive holds the local-read token')
  // Every znode, persistent and ephemeral, made by the CLI, the node or the agent: digest only.
  const wanted = [{ perms: zookeeper.Permission.ALL, scheme: 'digest', id: zkDigestId(auth.user, auth.password) }]
  const wrongAcls: string[] = []
  for (const p of before.keys()) {
    const acls = (await getAcl(owner, p)).map(a => ({ perms: (a as unknown as { permission: number }).permission, scheme: a.id.scheme, id: a.id.id }))
    if (JSON.stringify(acls) !== JSON.stringify(wanted)) wrongAcls.push(`${p}: ${JSON.stringify(acls)}`)
  }
  t.same(wrongAcls, [], `all ${before.size} znodes carry ALL for ${auth.user} and nothing else`)
  t.ok(before.size >= 15, `checked ${before.size} znodes`)

  const NO_AUTH = zookeeper.Exception.NO_AUTH
  const victims = [paths.root, paths.config, paths.disk('vm1'), paths.fence('vm1'), paths.segment('vm1', 0), paths.snapshot('vm1', 's1'), paths.node('a1'), nodeAlive, paths.agentAlive('hv-a')]
  for (const v of victims) t.ok(before.has(v), `${v} exists`)
  const outsiders: Array<[string, string | undefined]> = [['no credentials', undefined], ['a wrong password', `${auth.user}:not-the-password`], ['another user', 'mallory:x']]
  for (const [who, creds] of outsiders) {
    const rogue = await rawClient(t, zks, creds)
    t.equal(await code(cb => rogue.getData(nodeAlive, cb)), NO_AUTH, `${who}: reading nodes-alive (the local-read token) is refused`)
    t.equal(await code(cb => rogue.getChildren(paths.disks, cb)), NO_AUTH, `${who}: listing the disks is refused`)
    for (const v of victims) {
      t.equal(await code(cb => rogue.getData(v, cb)), NO_AUTH, `${who}: read ${v} refused`)
      t.equal(await code(cb => rogue.create(`${v}/intruder`, Buffer.from('x'), cb)), NO_AUTH, `${who}: create under ${v} refused`)
      t.equal(await code(cb => rogue.setData(v, Buffer.from('{"v":1}'), -1, cb)), NO_AUTH, `${who}: setData ${v} refused`)
      t.equal(await code(cb => rogue.setACL(v, [new zookeeper.ACL(zookeeper.Permission.ALL, new zookeeper.Id('world', 'anyone'))], -1, cb)), NO_AUTH, `${who}: setACL ${v} refused`)
      if (v !== paths.root) t.equal(await code(cb => rogue.remove(v, -1, cb)), NO_AUTH, `${who}: delete ${v} refused`)
    }
    // A transaction is refused as a whole.
    const tx = await code(cb => rogue.transaction().remove(paths.fence('vm1'), -1).create(paths.fence('vm1'), Buffer.from('{}')).commit(cb))
    t.not(tx, 0, `${who}: a transaction replacing the fence is refused (${tx})`)
  }
  const after = await tree(owner, paths.root)
  const changed = [...new Set([...before.keys(), ...after.keys()])].filter(p => before.get(p) !== after.get(p) && p !== nodeAlive && !p.startsWith(`${paths.rtts}/`))
  t.same(changed, [], 'nothing under /ukai changed (the periodic usage and round-trip reports aside)')

  // The CLI without the right credentials: a clear error, non-zero exit.
  const dir = makeTempDir(t, 'zk-auth')
  const wrong = path.join(dir, 'wrong')
  fs.writeFileSync(wrong, `${auth.user}:not-the-password\n`, { mode: 0o600 })
  const refused = await runCli(['disk', 'list', '--zk-auth', wrong], { zk: zks })
  t.equal(refused.code, 1, 'a wrong password: exit 1')
  t.match(refused.stderr, /refused access to \/ukai.*--zk-auth/, `says ZooKeeper refused the credentials: ${refused.stderr.trim()}`)
  const insecure = await runCli(['disk', 'list', '--insecure-zk'], { zk: zks })
  t.equal(insecure.code, 1, '--insecure-zk against a secured cluster: exit 1')
  t.match(insecure.stderr, /warning: ZooKeeper ACLs are OFF/, 'and it warned')
  t.same((await cliJson<Array<{ name: string }>>(['disk', 'list'], zks)).map(d => d.name), ['vm1'], 'with the file: the disk is there')
})

t.test('a credentials file others can read, or none at all, is refused; --insecure-zk is world-open and says so', async (t) => {
  const zk = await startZk(t)
  const dir = makeTempDir(t, 'zk-auth')
  const open = path.join(dir, 'open')
  fs.writeFileSync(open, 'ukai:secret\n')
  fs.chmodSync(open, 0o644)
  const r = await runCli(['disk', 'list', '--zk-auth', open], { zk: zk.connectString })
  t.equal(r.code, 2, 'a world-readable file: exit 2')
  t.match(r.stderr, new RegExp(`${open}.*mode 0644.*chmod 600`), `says which file and why: ${r.stderr.trim()}`)
  fs.chmodSync(open, 0o640)
  t.match((await runCli(['disk', 'list', '--zk-auth', open], { zk: zk.connectString })).stderr, /mode 0640/, 'group-readable too')
  const garbled = path.join(dir, 'garbled')
  fs.writeFileSync(garbled, 'no-colon-here\n', { mode: 0o600 })
  t.match((await runCli(['disk', 'list', '--zk-auth', garbled], { zk: zk.connectString })).stderr, /expected one line user:password/, 'a malformed file')
  // A daemon refuses it the same way, before serving.
  const node = spawnSync(process.execPath, [cliMainPath(), 'storagenode', '--id', 'x1', '--site', 'site-a', '--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--zk', zk.connectString, '--zk-auth', open],
    { env: daemonEnv(), encoding: 'utf8', timeout: 30_000 })
  t.equal(node.status, 2, `a storage node with a readable credentials file exits 2: ${node.stderr}`)
  t.match(node.stderr, /must be readable by its owner only/)
  t.notOk(fs.existsSync(path.join(dir, 'data')) && fs.readdirSync(path.join(dir, 'data')).length > 0, 'and stored nothing')

  // No file anywhere: refused, saying how to give one.
  const env = { ...daemonEnv() }
  delete env.UKAI_ZK_AUTH
  const none = spawnSync(process.execPath, [cliMainPath(), 'disk', 'list', '--zk', zk.connectString], { env, encoding: 'utf8', timeout: 30_000 })
  if (!fs.existsSync('/etc/ukai/zk-auth')) {
    t.equal(none.status, 2, 'no credentials: exit 2')
    t.match(none.stderr, /no ZooKeeper credentials: give --zk-auth FILE, set UKAI_ZK_AUTH/)
  }

  // --insecure-zk: works, warns, and what it creates is world-open.
  const ins = spawnSync(process.execPath, [cliMainPath(), 'disk', 'list', '--zk', zk.connectString, '--insecure-zk'], { env, encoding: 'utf8', timeout: 30_000 })
  t.equal(ins.status, 0, ins.stderr)
  t.match(ins.stderr, /warning: ZooKeeper ACLs are OFF \(--insecure-zk\)/)
  const rogue = await rawClient(t, zk.connectString)
  const acls = await getAcl(rogue, paths.config)
  t.same(acls.map(a => `${a.id.scheme}:${a.id.id}`), ['world:anyone'], 'an insecure cluster\'s znodes are world-open')
  // A daemon run with --insecure-zk says so in its log, as a WARN line, when it starts.
  const insecureNode = await startStorageNode({ dir: path.join(dir, 'insecure-node'), id: 'i1', site: 'site-a', zk: zk.connectString, zkAuthFile: null })
  t.teardown(async () => { await insecureNode.stop() })
  const warns = fs.readFileSync(insecureNode.logFile, 'utf8').split('\n').filter(l => l.includes('"level":40') && l.includes('ZooKeeper ACLs are OFF (--insecure-zk)'))
  t.equal(warns.length, 1, 'the storage node logged one WARN line: ZooKeeper ACLs are OFF')
  t.equal((await getAcl(rogue, paths.nodeAlive('i1'))).map(a => a.id.scheme).join(), 'world', 'and what it creates is world-open')
  await insecureNode.stop()

  // Migration: the world-open cluster is secured by `ukai zk secure` with the credentials file.
  const made = spawnSync(process.execPath, [cliMainPath(), 'disk', 'create', 'old', '--size', '4M', '--zk', zk.connectString, '--insecure-zk'], { env, encoding: 'utf8', timeout: 30_000 })
  t.equal(made.status, 1, 'no storage node: the create fails, the cluster stays initialised and world-open')
  t.equal((await new Promise<Buffer>((resolve, reject) => rogue.getData(paths.config, (err, d) => err != null ? reject(err) : resolve(d)))).length > 0, true, 'before: anyone reads the config')
  const secured = await cliJson<{ secured: number, alreadySecure: number }>(['zk', 'secure'], zk.connectString)
  t.ok(secured.secured >= 7, `secured ${secured.secured} znodes`)
  t.equal(await code(cb => rogue.getData(paths.config, cb)), zookeeper.Exception.NO_AUTH, 'after: the config cannot be read without credentials')
  t.equal(await code(cb => rogue.create(`${paths.disks}/intruder`, Buffer.from('x'), cb)), zookeeper.Exception.NO_AUTH, 'nor a disk created')
  t.same(await cliJson<unknown[]>(['disk', 'list'], zk.connectString), [], 'the CLI with the credentials file works')
  const again = await cliJson<{ secured: number, alreadySecure: number }>(['zk', 'secure'], zk.connectString)
  t.same([again.secured, again.alreadySecure], [0, secured.secured + secured.alreadySecure], 'run again: nothing left to do')
})
