// A guest whose disk is the agent's NBD export (QEMU's own NBD client, `file.driver=nbd` on the
// agent's socket, `reconnect-delay`), one guest through three events:
//
//   boot, write and verify rounds ─▶ paused: every record checked through the FUSE file
//   ─▶ the agent restarted under it: the guest sees a pause, not an I/O error (QEMU reconnects
//      to the new agent's socket and resends; on the FUSE file the same restart fails the open
//      descriptors, test/agent-crash.test.ts)
//   ─▶ kill -9 of a storage node under the guest and under a pipelined NBD write stream on a
//      second disk: nothing acknowledged is lost, byte for byte, through NBD and the FUSE file.
//
// One boot for all three: a TCG boot costs tens of seconds on this machine.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import * as P from '../src/nbd/protocol'
import { runCli } from './helpers/cli'
import { fuseUnavailable, makeTempDir, missingCli } from './helpers/cluster'
import { GUEST_RECORD_BYTES, ensureGuest, guestUnavailable } from './helpers/guest'
import { roundStats, rounds } from './helpers/migrate'
import { randomBytes, rng, sha256 } from './helpers/model'
import { RawNbdClient } from './helpers/nbd-client'
import { qemuUnavailable as qemuToolsUnavailable, startNbdCluster, waitForSocket } from './helpers/nbd'
import { QemuGuest, chooseAccel, qemuUnavailable } from './helpers/qemu'

const KiB = 1024
const MiB = 1024 * KiB
const SLOTS = 32
const RECONNECT_DELAY_SEC = 30
const STREAM_BYTES = 12 * MiB
const STREAM_DEPTH = 8 // writes in flight on the raw NBD connection

const why = missingCli('mount') ?? fuseUnavailable() ?? qemuToolsUnavailable() ?? qemuUnavailable() ?? guestUnavailable()

// Every slot holds a whole record for its own slot from one of the last SLOTS rounds up to LAST.
function badRecords (disk: Buffer, last: number): string[] {
  const bad: string[] = []
  for (let slot = 0; slot < SLOTS; slot++) {
    const rec = disk.subarray(slot * GUEST_RECORD_BYTES, (slot + 1) * GUEST_RECORD_BYTES)
    const m = /^UKAI seq=(\d{10}) slot=(\d{6})\n/.exec(rec.toString('latin1', 0, 34))
    const seq = m === null ? -1 : Number(m[1])
    if (m === null || Number(m[2]) !== slot || seq % SLOTS !== slot || seq < last - SLOTS || seq > last + 1 || rec.subarray(34).some(b => b !== 0)) {
      bad.push(`slot ${slot}: ${JSON.stringify(rec.toString('latin1', 0, 34))}`)
    }
  }
  return bad
}

async function readFuse (file: string, len: number): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r')
  try {
    const b = Buffer.alloc(len)
    await fh.read(b, 0, len, 0)
    return b
  } finally { await fh.close() }
}

t.test('a guest on the agent\'s NBD export', { skip: why ?? false }, async (t) => {
  const image = ensureGuest()
  const c = await startNbdCluster(t)
  const zk = c.zk.connectString
  const dir = makeTempDir(t, 'nbd-guest')
  for (const d of ['vm', 'w']) {
    const r = await runCli(['disk', 'create', d, '--size', '16M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,a2'], { zk })
    t.equal(r.code, 0, r.stderr)
    await waitForSocket(c.socket(d))
  }
  const scratch = path.join(dir, 'probe.raw')
  fs.writeFileSync(scratch, Buffer.alloc(0))
  fs.truncateSync(scratch, 16 * MiB)
  const accel = await chooseAccel(image, scratch)
  t.comment(`accelerator: ${accel.accel} (${accel.why})`)
  const startedMs = Date.now()
  const g = await QemuGuest.start({ image, dir, name: 'g', accel: accel.accel, slots: SLOTS, disk: c.socket('vm'), nbd: { export: 'vm', reconnectDelaySec: RECONNECT_DELAY_SEC } })
  t.teardown(() => g.stop())
  const fuseFile = path.join(c.agent.mountPoint, 'vm')
  const waitRounds = async (n: number): Promise<number> => {
    const target = g.progress().lastSeq + n
    await g.waitSerial(new RegExp(`UKAI-GUEST ok seq=${target} `), { timeoutMs: 150_000 })
    return target
  }
  const ioErrors = (): string[] => g.serial.filter(l => /I\/O error|Buffer I\/O|blk_update_request|UKAI-GUEST FAIL/.test(l.text)).map(l => l.text)

  t.test('boots from the NBD disk, writes and verifies it; the FUSE file holds the same bytes', async (t) => {
    const boot = await g.waitSerial(/UKAI-GUEST boot/, { timeoutMs: 180_000 })
    t.comment(`booted in ${boot.atMs - startedMs} ms`)
    await waitRounds(SLOTS + 16) // past SLOTS: older records are re-read too
    await g.qmp?.execute('stop')
    const last = g.progress().lastSeq
    t.same(g.progress().fails, [], 'every verification in the guest passed')
    // A paused VM has no request in flight (QEMU drains on stop): what the FUSE file reads is final.
    const disk = await readFuse(fuseFile, SLOTS * GUEST_RECORD_BYTES)
    t.same(badRecords(disk, last), [], `through the FUSE file all ${SLOTS} records are whole and current (guest at round ${last})`)
    await g.qmp?.execute('cont')
  })

  t.test('the agent restarted under the guest: a pause, not an I/O error', async (t) => {
    const before = await waitRounds(8)
    const restartMs = Date.now()
    await c.agent.restart()
    const restartedMs = Date.now()
    t.comment(`agent restarted in ${restartedMs - restartMs} ms`)
    const after = await waitRounds(20)
    const rs = rounds(g)
    // From round BEFORE on: the round under way when the restart began is the one that waits.
    const across = roundStats(rs.filter(r => r.seq >= before && r.seq <= after), restartMs, Infinity)
    const normal = roundStats(rs.filter(r => r.seq <= before), 0, Infinity)
    t.comment(`guest rounds: median ${normal.medianMs} ms before; longest across the restart ${across.maxMs} ms (restart took ${restartedMs - restartMs} ms; reconnect-delay ${RECONNECT_DELAY_SEC} s)`)
    const said = g.stderr.split('\n').filter(l => l.trim() !== '')
    if (said.length > 0) t.comment(`QEMU said: ${said.slice(-5).join(' | ')}`)
    t.same(ioErrors(), [], 'the guest saw no I/O error and every verification passed')
    t.ok(across.maxMs > normal.p99Ms, `the guest waited (a round of ${across.maxMs} ms against a p99 of ${normal.p99Ms} ms before)`)
    t.ok(across.maxMs < RECONNECT_DELAY_SEC * 1000, 'the pause ended within the reconnect delay')
    t.ok(after > before + 19, `the guest went on (round ${before} → ${after}) on the restarted agent`)
  })

  t.test('kill -9 of a storage node under NBD writes: nothing acknowledged lost', async (t) => {
    const client = await RawNbdClient.connect(c.socket('w'))
    t.teardown(() => client.destroy())
    await client.greet()
    await client.structuredReplies()
    await client.go('w')
    const model = Buffer.alloc(16 * MiB)
    const rand = rng(77)
    let acked = 0
    const refused: string[] = []
    let killedAtBytes = -1
    const guestBefore = g.progress().lastSeq
    // Writes of 4–256 KiB at random offsets, STREAM_DEPTH in flight, a2 killed a third of the way.
    let sent = 0
    const inflight = new Map<Promise<void>, [number, number]>()
    while (sent < STREAM_BYTES) {
      if (killedAtBytes < 0 && sent >= STREAM_BYTES / 3) {
        killedAtBytes = sent
        await c.nodes[1].kill('SIGKILL')
      }
      const len = (1 + Math.floor(rand() * 64)) * 4 * KiB
      const off = Math.floor(rand() * (16 * MiB - len) / (4 * KiB)) * 4 * KiB
      const data = randomBytes(rand, len)
      const flags = rand() < 0.1 ? P.NBD_CMD_FLAG_FUA : 0
      sent += len
      // Overlapping writes in flight at once have no defined order: wait for those first, so the
      // model stays exact.
      if ([...inflight.values()].some(([o, l]) => off < o + l && o < off + len)) await Promise.all(inflight.keys())
      const p: Promise<void> = client.request(P.NBD_CMD_WRITE, off, len, { payload: data, flags }).then((r) => {
        if (r.error === 0) { data.copy(model, off); acked += len } else refused.push(`${off}+${len}: error ${r.error}`)
      }).finally(() => inflight.delete(p))
      inflight.set(p, [off, len])
      if (inflight.size >= STREAM_DEPTH) await Promise.race(inflight.keys())
    }
    await Promise.all(inflight.keys())
    t.same(refused, [], `every write was acknowledged (${(acked / MiB).toFixed(1)} MiB; a2 killed at ${(killedAtBytes / MiB).toFixed(1)} MiB)`)
    t.equal((await client.request(P.NBD_CMD_FLUSH, 0, 0)).error, 0, 'flush after the kill succeeds')
    const back = (await client.request(P.NBD_CMD_READ, 0, 16 * MiB)).data as Buffer
    t.equal(sha256(back), sha256(model), 'NBD reads back every acknowledged byte')
    t.equal(sha256(await readFuse(path.join(c.agent.mountPoint, 'w'), 16 * MiB)), sha256(model), 'and so does the FUSE file')
    const guestAfter = await waitRounds(10)
    t.same(ioErrors(), [], `the guest went on (round ${guestBefore} → ${guestAfter}) with no I/O error and every verification passing`)
    await g.qmp?.execute('stop')
    const last = g.progress().lastSeq
    t.same(badRecords(await readFuse(fuseFile, SLOTS * GUEST_RECORD_BYTES), last), [], 'the guest\'s records are whole and current through the FUSE file')
    await c.nodes[1].restart()
    t.equal(sha256((await client.request(P.NBD_CMD_READ, 0, 16 * MiB)).data as Buffer), sha256(model), 'after a2 restarts, reads still return the model (its stale copies are skipped)')
    client.disconnect()
  })
})
