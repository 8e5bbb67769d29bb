// Racing creates cannot both pass the last of a quota (issue 12 part 3): the tenant's ledger
// znode is checked and bumped in the same ZooKeeper transaction as each create
// (src/meta/tenant-ledger.ts). Six creates from four ZooKeeper sessions at once for one free
// disk, eight rounds; then two CLI processes at once against a capacity quota.
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { createDisk } from '../src/admin/disk-admin'
import { getTenant } from '../src/meta/tenants'
import { processZkAuth, startCluster } from './helpers/cluster'
import { cliOk, runCli } from './helpers/cli'

const MiB = 1024 * 1024

t.test('racing creates cannot both pass the last of a quota', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2, agents: false })
  const zk = c.zk.connectString
  const stores = await Promise.all(Array.from({ length: 4 }, async () => await MetaStore.connect(zk, { auth: processZkAuth() })))
  t.teardown(async () => { for (const s of stores) await s.close() })
  await cliOk(t, ['tenant', 'create', 'race'], zk)
  const ROUNDS = 8
  const PER_ROUND = 6
  for (let round = 1; round <= ROUNDS; round++) {
    // Room for exactly one more disk; six creates from four ZooKeeper sessions at once.
    await cliOk(t, ['tenant', 'quota', 'race', '--disks', String(round)], zk)
    const results = await Promise.allSettled(Array.from({ length: PER_ROUND }, async (_, i) =>
      await createDisk(stores[i % stores.length], { name: `r${round}-${i}`, sizeBytes: MiB, blockSizeBytes: MiB, replicas: 1, tenant: 'race' })))
    const passed = results.filter(r => r.status === 'fulfilled').length
    const quota = results.filter(r => r.status === 'rejected' && (r.reason as { code?: string }).code === 'QUOTA_EXCEEDED').length
    t.equal(passed, 1, `round ${round}: exactly one create passed`)
    t.equal(quota, PER_ROUND - 1, `round ${round}: the others were refused by the quota`)
  }
  const disks = (await stores[0].listDisks()).filter(d => d.tenant === 'race')
  t.equal(disks.length, ROUNDS, 'ZooKeeper holds exactly one disk per round')
  t.same((await getTenant(stores[0], 'race'))?.usage, { capacityBytes: ROUNDS * MiB, disks: ROUNDS, snapshots: 0 }, 'the ledger agrees with the disks')

  // The same through the CLI: two processes started at once, a quota of one more disk, capacity.
  await cliOk(t, ['tenant', 'create', 'race2'], zk)
  await cliOk(t, ['tenant', 'quota', 'race2', '--capacity', '3M'], zk)
  for (let round = 0; round < 3; round++) {
    const [x, y] = await Promise.all([
      runCli(['disk', 'create', `p${round}`, '--size', '1M', '--block-size', '1M', '--replicas', '1', '--tenant', 'race2'], { zk }),
      runCli(['disk', 'create', `q${round}`, '--size', '1M', '--block-size', '1M', '--replicas', '1', '--tenant', 'race2'], { zk })
    ])
    for (const r of [x, y]) if (r.code !== 0) t.match(r.stderr, /tenant 'race2' would exceed its capacity quota of 3\.00 MiB/, `round ${round}: refused by the quota`)
  }
  const race2 = (await stores[0].listDisks()).filter(d => d.tenant === 'race2')
  t.equal(race2.length, 3, 'three 1M disks in a 3M quota, never more')
  t.same((await getTenant(stores[0], 'race2'))?.usage.capacityBytes, 3 * MiB)
})
