// A tenant's certificate manages only its own disks (issue 12 part 3): its CLI holds no
// ZooKeeper credentials at all (UKAI_ZK_AUTH names no file here) and goes to the tenant API an
// agent serves (`ukai mount --api-listen`), over mutual TLS. On another tenant's disk every verb
// (info, resize, delete, snapshot, clone, relocate) is PERMISSION_DENIED naming the disk and
// changes nothing; on its own they work, through the same atomic quotas as the admin path; it
// cannot create in another tenant nor relocate outside its sites. The agent's mount serves the
// tenant's disk as any other. A revoked tenant certificate is refused by the API.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { freePort } from '../src/dev/free-port'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, cliOk, runCli } from './helpers/cli'
import { identityDir, testCa } from './helpers/tls'
import { revokeCert } from '../src/security/crl'
import { sleep } from '../src/lib/timers'

const MiB = 1024 * 1024

t.test('a tenant certificate through the tenant API', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  await Promise.all([startNode(t, { zk, id: 'a1', site: 'site-a' }), startNode(t, { zk, id: 'b1', site: 'site-b' })])
  const port = await freePort()
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--api-listen', `127.0.0.1:${port}`] })
  const api = `127.0.0.1:${port}`
  const admin = async (args: string[]): Promise<string> => await cliOk(t, args, zks)

  await admin(['tenant', 'create', 'acme', '--sites', 'site-a'])
  await admin(['tenant', 'create', 'other'])
  await admin(['tenant', 'quota', 'acme', '--disks', '2'])
  await admin(['disk', 'create', 'o1', '--size', '2M', '--block-size', '1M', '--replicas', '1', '--tenant', 'other'])
  await admin(['snapshot', 'create', 'o1@base'])

  const acmeTls = await identityDir({ role: 'tenant', name: 'acme' })
  // No ZooKeeper credentials and an unreachable ZooKeeper: everything a tenant does goes to the API.
  const asAcme = async (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> =>
    await runCli(['--api', api, ...args], { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: acmeTls })
  const acmeOk = async (args: string[]): Promise<string> => {
    const r = await asAcme(args)
    t.equal(r.code, 0, `tenant acme: ukai ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const o1 = async (): Promise<{ sizeBytes: number, snapshots: number, tenant: string }> => await cliJson(['disk', 'info', 'o1'], zks)

  t.test('its own disks: create, info, resize, snapshot, clone, list, delete', async (t) => {
    await acmeOk(['disk', 'create', 't1', '--size', '4M', '--block-size', '1M', '--replicas', '1'])
    const info = JSON.parse(await acmeOk(['disk', 'info', 't1', '--json'])) as { tenant: string, sizeBytes: number, replicasPerNode: Record<string, unknown> }
    t.equal(info.tenant, 'acme', 'created in the certificate\'s tenant')
    t.same(Object.keys(info.replicasPerNode), ['a1'], 'placed at the tenant\'s allowed site')
    await acmeOk(['disk', 'resize', 't1', '--size', '6M'])
    t.equal((await cliJson<{ sizeBytes: number }>(['disk', 'info', 't1'], zks)).sizeBytes, 6 * MiB)
    await acmeOk(['snapshot', 'create', 't1@s1'])
    t.same((JSON.parse(await acmeOk(['snapshot', 'list', 't1', '--json'])) as Array<{ name: string }>).map(s => s.name), ['s1'])
    await acmeOk(['clone', 't1@s1', 'c1'])
    const mine = JSON.parse(await acmeOk(['disk', 'list', '--json'])) as Array<{ name: string }>
    t.same(mine.map(d => d.name).sort(), ['c1', 't1'], 'the list shows its own disks only')
    // The quota holds on this path too: a third disk is refused, nothing created.
    const third = await asAcme(['clone', 't1@s1', 'c2'])
    t.equal(third.code, 1)
    t.match(third.stderr, /tenant 'acme' would exceed its disks quota of 2/)
    t.notOk((await cliJson<Array<{ name: string }>>(['disk', 'list'], zks)).some(d => d.name === 'c2'))
    await acmeOk(['disk', 'delete', 'c1'])
    t.same((await cliJson<{ usage: { disks: number } }>(['tenant', 'info', 'acme'], zks)).usage.disks, 1)
  })

  t.test('the agent\'s mount serves the tenant\'s disk as any other', async (t) => {
    const file = path.join(agent.mountPoint, 't1')
    const data = Buffer.alloc(MiB, 0x7e)
    const fd = fs.openSync(file, 'r+')
    try {
      fs.writeSync(fd, data, 0, data.length, MiB)
      fs.fsyncSync(fd)
      const back = Buffer.alloc(MiB)
      fs.readSync(fd, back, 0, back.length, MiB)
      t.ok(back.equals(data), 'written and read back byte for byte')
    } finally {
      fs.closeSync(fd)
    }
  })

  t.test('another tenant\'s disk: refused, naming the disk, nothing changed', async (t) => {
    const before = await o1()
    const cases: Array<{ args: string[], verb: string }> = [
      { args: ['disk', 'info', 'o1'], verb: 'read' },
      { args: ['disk', 'resize', 'o1', '--size', '4M'], verb: 'resize' },
      { args: ['disk', 'delete', 'o1'], verb: 'delete' },
      { args: ['snapshot', 'create', 'o1@mine'], verb: 'snapshot' },
      { args: ['snapshot', 'list', 'o1'], verb: 'list the snapshots of' },
      { args: ['snapshot', 'delete', 'o1@base'], verb: 'delete a snapshot of' },
      { args: ['clone', 'o1@base', 'stolen'], verb: 'clone' },
      { args: ['relocate', 'o1', '--to', 'site-a'], verb: 'relocate' }
    ]
    for (const c of cases) {
      const r = await asAcme(c.args)
      t.equal(r.code, 1, `${c.args.join(' ')}: non-zero exit`)
      t.match(r.stderr, `tenant acme may not ${c.verb} disk 'o1': it belongs to another tenant`, `${c.args.join(' ')}: PERMISSION_DENIED naming the disk`)
    }
    const json = await asAcme(['disk', 'info', 'o1', '--json'])
    t.match(json.stderr, /"code":"PERMISSION_DENIED"/)
    t.same(await o1(), before, 'o1 is unchanged (size, snapshots, tenant)')
    t.notOk((await cliJson<Array<{ name: string }>>(['disk', 'list'], zks)).some(d => d.name === 'stolen'))
  })

  t.test('it cannot create in another tenant, nor move outside its sites', async (t) => {
    const r = await asAcme(['disk', 'create', 'x1', '--size', '1M', '--tenant', 'other'])
    t.equal(r.code, 1)
    t.match(r.stderr, /tenant acme may not create disk 'x1' in tenant 'other'/)
    const far = await asAcme(['relocate', 't1', '--to', 'site-b'])
    t.equal(far.code, 1)
    t.match(far.stderr, /tenant acme may not relocate disk 't1' at site 'site-b' \(allowed: site-a\)/)
    const site = await asAcme(['disk', 'create', 'x2', '--size', '1M', '--site', 'site-b'])
    t.match(site.stderr, /may not create disk 'x2' at site 'site-b'/)
    t.notOk((await cliJson<Array<{ name: string }>>(['disk', 'list'], zks)).some(d => d.name === 'x1' || d.name === 'x2'), 'nothing created')
    const noApi = await runCli(['disk', 'list'], { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: acmeTls })
    t.equal(noApi.code, 2)
    t.match(noApi.stderr, /holds the certificate of tenant acme: tenants go through the tenant API — give --api HOST:PORT or set UKAI_API/)
  })

  t.test('a revoked tenant certificate is refused within seconds', async (t) => {
    const old = await identityDir({ role: 'tenant', name: 'acme-old' })
    const list = async (): Promise<{ code: number, stderr: string }> => await runCli(['--api', api, 'disk', 'list', '--json'], { zk: '127.0.0.1:9', zkAuth: '/nonexistent/zk-auth', tlsDir: old })
    t.equal((await list()).code, 0, 'accepted before')
    await revokeCert(await testCa(), { certFile: path.join(old, 'tls.crt') })
    let last = { code: 0, stderr: '' }
    for (let i = 0; i < 20 && last.code === 0; i++) { await sleep(500); last = await list() }
    t.equal(last.code, 1, 'refused after')
    t.match(last.stderr, /tenant API: ListDisks refused: the certificate of tenant acme-old is revoked/)
  })
})
