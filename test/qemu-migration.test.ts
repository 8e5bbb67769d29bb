// Live migration A → B of a guest whose disk is the FUSE file on each host's mount, with the data
// following (the scenario and its checks: test/helpers/migration-scenario.ts; the same over NBD:
// test/nbd-migration.test.ts).
import t from 'tap'
import { guestUnavailable } from './helpers/guest'
import { migrationAtoB } from './helpers/migration-scenario'
import { qemuUnavailable } from './helpers/qemu'

const why = qemuUnavailable() ?? guestUnavailable()
t.test('live migration A → B with the data following', { skip: why === null ? false : `QEMU cannot run here: ${why}` }, async (t) => {
  await migrationAtoB(t, 'fuse')
})
