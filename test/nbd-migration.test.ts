// Live migration A → B of a guest whose disk is each agent's NBD export (the source QEMU on hv-a's
// socket, the destination on hv-b's), with the data following: the scenario and its checks of
// test/qemu-migration.test.ts (test/helpers/migration-scenario.ts). Over NBD QEMU needs nothing
// like libvirt's `--unsafe` (no host page cache between QEMU and the disk); the lease moves at the
// destination's first write as on the FUSE file.
import t from 'tap'
import { fuseUnavailable } from './helpers/cluster'
import { guestUnavailable } from './helpers/guest'
import { migrationAtoB } from './helpers/migration-scenario'
import { qemuUnavailable as qemuToolsUnavailable } from './helpers/nbd'
import { qemuUnavailable } from './helpers/qemu'

const why = fuseUnavailable() ?? qemuToolsUnavailable() ?? qemuUnavailable() ?? guestUnavailable()
t.test('live migration A → B over NBD with the data following', { skip: why ?? false }, async (t) => {
  await migrationAtoB(t, 'nbd')
})
