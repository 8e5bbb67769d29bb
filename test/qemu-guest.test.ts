// Real QEMU on a UKAI mount: which cache=/aio= modes work on the FUSE mount (qemu-io, every
// combination), and a guest booted with its disk on the mount that writes and verifies it for a
// few dozen rounds; afterwards every record on the disk is checked from the host.
import fs from 'node:fs'
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import t from 'tap'
import { makeTempDir, startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { GUEST_RECORD_BYTES, ensureGuest, guestUnavailable } from './helpers/guest'
import { QemuGuest, chooseAccel, qemuUnavailable } from './helpers/qemu'

const SLOTS = 32
const ROUNDS = 48 // past SLOTS: the guest also re-reads older records

const why = qemuUnavailable() ?? guestUnavailable()
t.test('QEMU on the UKAI mount', { skip: why === null ? false : `QEMU cannot run here: ${why}` }, async (t) => {
  const image = ensureGuest()
  t.comment(`guest kernel from ${image.kernelPackage}`)
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const mnt = c.agents[0].mountPoint
  const dir = makeTempDir(t, 'qemu')

  t.test('cache= and aio= modes on the mount (qemu-io)', async (t) => {
    t.equal((await runCli(['disk', 'create', 'modes', '--size', '8M', '--block-size', '1M'], { zk })).code, 0)
    const file = path.join(mnt, 'modes')
    const works: string[] = []
    const fails: string[] = []
    let pattern = 0x10
    for (const cache of ['none', 'directsync', 'writeback', 'writethrough']) {
      for (const aio of ['threads', 'native', 'io_uring']) {
        pattern++
        const r = spawnSync('qemu-io', ['-f', 'raw', '-t', cache, '-i', aio,
          '-c', `write -P ${pattern} 65536 1M`, '-c', `read -P ${pattern} 65536 1M`, '-c', 'flush', file], { encoding: 'utf8', timeout: 60_000 })
        const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
        // read -P checks the pattern: a mismatch prints "Pattern verification failed"
        const ok = r.status === 0 && /read 1048576\/1048576/.test(out) && !/failed|error/i.test(out)
        ;(ok ? works : fails).push(`${cache}/${aio}${ok ? '' : `: ${out.trim().split('\n').pop()?.slice(0, 120)}`}`)
      }
    }
    t.comment(`works: ${works.join(', ')}`)
    t.comment(`refused: ${fails.join(' | ')}`)
    for (const m of ['none/threads', 'none/native', 'directsync/threads', 'writeback/threads']) t.ok(works.includes(m), `${m} works on the mount (O_DIRECT reaches the agent)`)
  })

  t.test('a guest boots from a disk on the mount and verifies every round', async (t) => {
    t.equal((await runCli(['disk', 'create', 'g1', '--size', '16M', '--block-size', '1M'], { zk })).code, 0)
    const disk = path.join(mnt, 'g1')
    const scratch = path.join(dir, 'probe.raw')
    fs.writeFileSync(scratch, Buffer.alloc(0))
    fs.truncateSync(scratch, 16 * 1024 * 1024)
    const accel = await chooseAccel(image, scratch)
    t.comment(`accelerator: ${accel.accel} (${accel.why})`)
    const started = Date.now()
    const g = await QemuGuest.start({ image, disk, dir, name: 'g1', accel: accel.accel, slots: SLOTS })
    t.teardown(() => g.stop())
    const boot = await g.waitSerial(/UKAI-GUEST boot/, { timeoutMs: 180_000 })
    t.comment(`booted in ${boot.atMs - started} ms`)
    const first = await g.waitSerial(/UKAI-GUEST ok seq=0 /)
    const last = await g.waitSerial(new RegExp(`UKAI-GUEST ok seq=${ROUNDS} `), { timeoutMs: 180_000 })
    t.comment(`${ROUNDS} rounds (write 4 KiB O_DIRECT, read back, compare) in ${last.atMs - first.atMs} ms`)
    await g.qmp?.execute('stop')
    const p = g.progress()
    t.same(p.fails, [], 'every verification in the guest passed')
    t.ok(p.lastSeq >= ROUNDS)
    await g.stop()
    // From the host: each slot holds a record for its own slot, from one of the last rounds.
    const data = fs.readFileSync(disk)
    const bad: string[] = []
    for (let slot = 0; slot < SLOTS; slot++) {
      const rec = data.subarray(slot * GUEST_RECORD_BYTES, (slot + 1) * GUEST_RECORD_BYTES)
      const m = /^UKAI seq=(\d{10}) slot=(\d{6})\n/.exec(rec.toString('latin1', 0, 34))
      const seq = m === null ? -1 : Number(m[1])
      if (m === null || Number(m[2]) !== slot || seq % SLOTS !== slot || seq < p.lastSeq - SLOTS || seq > p.lastSeq + 1 || rec.subarray(34).some(b => b !== 0)) {
        bad.push(`slot ${slot}: ${JSON.stringify(rec.toString('latin1', 0, 34))}`)
      }
    }
    t.same(bad, [], `all ${SLOTS} records on the disk are whole and current`)
  })
})
