// Tenants with quotas (issue 12 part 3, admin path): a quota exceeded by a create, a resize, a
// snapshot, a clone and an import is refused with an error naming the quota, and nothing is
// created (checked in ZooKeeper: the tree under /ukai/disks and the tenant's ledger are as
// before); a tenant that owns disks is not
// deleted; bad input is refused with a clear error and a non-zero exit, changing nothing.
// (Racing creates: test/tenant-quota-race.test.ts.)
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { makeTempDir, startCluster } from './helpers/cluster'
import { metaTree, rawClient } from './helpers/zk-tree'
import { cliJson, cliOk, runCli } from './helpers/cli'

const MiB = 1024 * 1024

interface Tenant { name: string, quota: { capacityBytes: number | null, disks: number | null, snapshots: number | null }, usage: { capacityBytes: number, disks: number, snapshots: number } }

t.test('tenants and quotas', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const raw = await rawClient(t, zk)
  const ok = async (args: string[]): Promise<string> => await cliOk(t, args, zk)
  const tenant = async (name: string): Promise<Tenant> => await cliJson<Tenant>(['tenant', 'info', name], zk)
  const diskNames = async (): Promise<string[]> => (await cliJson<Array<{ name: string }>>(['disk', 'list'], zk)).map(d => d.name).sort()
  // Runs a change that must be refused by `quota`: non-zero exit, the quota named, ZooKeeper unchanged.
  type Checks = { equal: (a: unknown, b: unknown, m: string) => unknown, match: (a: unknown, b: RegExp, m: string) => unknown, same: (a: unknown, b: unknown, m: string) => unknown }
  const refused = async (t: Checks, args: string[], quota: RegExp, code = 1): Promise<void> => {
    const before = await metaTree(raw)
    const r = await runCli(args, { zk })
    t.equal(r.code, code, `ukai ${args.join(' ')} exits ${code}`)
    t.match(r.stderr, quota, 'the error names what was refused')
    t.same(await metaTree(raw), before, 'nothing changed in ZooKeeper (disks, snapshots, ledgers)')
  }

  await ok(['tenant', 'create', 'acme'])
  await ok(['tenant', 'quota', 'acme', '--capacity', '8M', '--disks', '3', '--snapshots', '1'])
  t.same((await tenant('acme')).quota, { capacityBytes: 8 * MiB, disks: 3, snapshots: 1 })

  t.test('creates count against the quota; one over it is refused', async (t) => {
    await ok(['disk', 'create', 'a1', '--size', '4M', '--block-size', '1M', '--tenant', 'acme'])
    t.same((await tenant('acme')).usage, { capacityBytes: 4 * MiB, disks: 1, snapshots: 0 })
    await refused(t, ['disk', 'create', 'a2', '--size', '5M', '--block-size', '1M', '--tenant', 'acme'], /tenant 'acme' would exceed its capacity quota of 8\.00 MiB/)
    t.notOk((await diskNames()).includes('a2'), 'the disk does not exist')
    const r = await runCli(['disk', 'info', 'a2'], { zk })
    t.match(r.stderr, /unknown disk 'a2'/)
  })

  t.test('a resize past the capacity quota is refused, the disk keeps its size', async (t) => {
    await refused(t, ['disk', 'resize', 'a1', '--size', '9M'], /growing disk 'a1' refused: tenant 'acme' would exceed its capacity quota/)
    t.equal((await cliJson<{ sizeBytes: number }>(['disk', 'info', 'a1'], zk)).sizeBytes, 4 * MiB)
    await ok(['disk', 'resize', 'a1', '--size', '6M'])
    t.same((await tenant('acme')).usage.capacityBytes, 6 * MiB, 'a resize within the quota is counted')
  })

  t.test('a snapshot past the snapshots quota is refused', async (t) => {
    await ok(['snapshot', 'create', 'a1@s1'])
    t.equal((await tenant('acme')).usage.snapshots, 1)
    await refused(t, ['snapshot', 'create', 'a1@s2'], /snapshot a1@s2 refused: tenant 'acme' would exceed its snapshots quota of 1 \(it has 1\)/)
    const snaps = await cliJson<Array<{ name: string }>>(['snapshot', 'list', 'a1'], zk)
    t.same(snaps.map(s => s.name), ['s1'], 'no snapshot s2')
  })

  t.test('a clone past the capacity quota is refused; within it, it counts as a disk', async (t) => {
    // 6M used of 8M: a clone of the 4M snapshot does not fit.
    await refused(t, ['clone', 'a1@s1', 'c1'], /creating disk 'c1' refused: tenant 'acme' would exceed its capacity quota/)
    t.notOk((await diskNames()).includes('c1'))
    await ok(['tenant', 'quota', 'acme', '--capacity', 'none'])
    await ok(['clone', 'a1@s1', 'c1'])
    t.same((await tenant('acme')).usage, { capacityBytes: 12 * MiB, disks: 2, snapshots: 1 })
    t.equal((await cliJson<{ tenant: string }>(['disk', 'info', 'c1'], zk)).tenant, 'acme', 'a clone belongs to its parent\'s tenant')
  })

  t.test('an import past a quota is refused, and no disk is left', async (t) => {
    const dir = makeTempDir(t, 'tenant-import')
    const img = path.join(dir, 'img.raw')
    fs.writeFileSync(img, Buffer.alloc(2 * MiB, 0x61))
    await ok(['tenant', 'create', 'small'])
    await ok(['tenant', 'quota', 'small', '--capacity', '1M'])
    await refused(t, ['import', img, 'imp1', '--tenant', 'small', '--block-size', '1M'], /creating disk 'imp1' refused: tenant 'small' would exceed its capacity quota of 1\.00 MiB/)
    t.notOk((await diskNames()).includes('imp1'))
    // A stream import also commits a snapshot: refused up front by the snapshots quota.
    const stream = path.join(dir, 'a1.ukai')
    await ok(['export', 'a1@s1', stream, '--format', 'stream'])
    await ok(['tenant', 'quota', 'small', '--capacity', 'none', '--snapshots', '0'])
    await refused(t, ['import', stream, 'imp2', '--tenant', 'small'], /tenant 'small' would exceed its snapshots quota of 0/)
    t.notOk((await diskNames()).includes('imp2'))
    // Within the quotas it works and is counted.
    await ok(['tenant', 'quota', 'small', '--snapshots', 'none'])
    await ok(['import', stream, 'imp2', '--tenant', 'small'])
    t.same((await tenant('small')).usage, { capacityBytes: 6 * MiB, disks: 1, snapshots: 1 })
  })

  t.test('the disks quota counts clones, and deletes free what they held', async (t) => {
    await ok(['disk', 'create', 'a3', '--size', '1M', '--block-size', '1M', '--tenant', 'acme'])
    await refused(t, ['disk', 'create', 'a4', '--size', '1M', '--block-size', '1M', '--tenant', 'acme'], /tenant 'acme' would exceed its disks quota of 3 \(it has 3\)/)
    await ok(['disk', 'delete', 'a3'])
    await ok(['disk', 'delete', 'c1'])
    t.same((await tenant('acme')).usage, { capacityBytes: 6 * MiB, disks: 1, snapshots: 1 })
    await ok(['snapshot', 'delete', 'a1@s1'])
    t.same((await tenant('acme')).usage.snapshots, 0, 'a deleted snapshot is freed')
  })

  t.test('a tenant that owns disks is not deleted', async (t) => {
    const before = await metaTree(raw)
    const r = await runCli(['tenant', 'delete', 'acme'], { zk })
    t.equal(r.code, 1)
    t.match(r.stderr, /tenant 'acme' owns disk a1; delete them first/)
    t.same(await metaTree(raw), before, 'nothing changed')
    await ok(['tenant', 'create', 'empty'])
    await ok(['tenant', 'delete', 'empty'])
    t.notOk((await cliJson<Tenant[]>(['tenant', 'list'], zk)).some(x => x.name === 'empty'), 'an empty tenant is deleted')
  })

  t.test('bad input: a clear error, non-zero exit, nothing changed', async (t) => {
    await refused(t, ['disk', 'create', 'x1', '--size', '1M', '--tenant', 'nobody'], /unknown tenant 'nobody'/)
    await refused(t, ['disk', 'create', 'x1', '--size', '1M', '--tenant', 'bad/name'], /bad tenant name 'bad\/name'/, 2)
    await refused(t, ['tenant', 'quota', 'acme', '--disks', '-1'], /bad --disks '-1'/, 2)
    await refused(t, ['tenant', 'quota', 'acme', '--disks', '2.5'], /bad --disks '2\.5'/, 2)
    await refused(t, ['tenant', 'quota', 'acme', '--capacity', 'lots'], /bad --capacity 'lots'/, 2)
    await refused(t, ['tenant', 'quota', 'acme'], /give at least one of --capacity, --disks, --snapshots/, 2)
    await refused(t, ['tenant', 'quota', 'nobody', '--disks', '1'], /unknown tenant 'nobody'/)
    await refused(t, ['tenant', 'create', 'acme'], /tenant 'acme' already exists/)
    await refused(t, ['tenant', 'delete', 'default'], /tenant 'default' cannot be deleted/, 2)
    await refused(t, ['tenant', 'delete', 'nobody'], /unknown tenant 'nobody'/)
  })

  t.test('the default tenant exists implicitly and counts the disks created without --tenant', async (t) => {
    await ok(['disk', 'create', 'd1', '--size', '2M', '--block-size', '1M'])
    const all = await cliJson<Tenant[]>(['tenant', 'list'], zk)
    t.same(all[0].name, 'default')
    t.same(all[0].usage.disks, 1)
    await ok(['tenant', 'quota', 'default', '--disks', '1'])
    await refused(t, ['disk', 'create', 'd2', '--size', '1M'], /tenant 'default' would exceed its disks quota of 1/)
    const table = await ok(['tenant', 'list'])
    t.match(table, /acme\s+│?\s*6\.00 MiB \/ none/, 'the table shows usage against quota')
  })
})
