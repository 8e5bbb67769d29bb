// Live migration of a running guest from site A to site B while its data follows, as an operator
// with libvirt would run it (libvirt itself is test/libvirtd.test.ts): the installed hook is called
// with the arguments and XML libvirt passes at each step, QEMU is driven over QMP.
//
//   source QEMU on hv-a's mount ──migrate (tcp, loopback)──▶ destination QEMU on hv-b's mount
//   the guest writes and re-verifies its disk every round, on both sides of the switch-over
//
// Checks: every verification passes; the guest goes on from where it was; the destination's
// first write moves the lease (no visible stall beyond a few rounds); the relocation the hook
// started goes on on hv-b; once it is done the disk's blocks are only at site B.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { StorageClient } from '../src/storagenode/client'
import { makeTempDir } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { ensureGuest, guestUnavailable } from './helpers/guest'
import { domainXml, hookLog, installHookFor, runHookScript } from './helpers/libvirt'
import { liveMigrate, roundStats, rounds } from './helpers/migrate'
import { randomBytes, rng, sha256 } from './helpers/model'
import { QemuGuest, chooseAccel, qemuUnavailable } from './helpers/qemu'
import { startWanSites } from './helpers/sites'

const MiB = 1024 * 1024
const SLOTS = 64
const DISK_MIB = 20
const FILL_FROM = 1 * MiB  // the guest's records live in the first 256 KiB; the rest is data to move

interface Status { state: string, executor: string, reason: string, createdAtMs: number, finishedAtMs: number }
interface Info { blocksPerSite: Record<string, number>, uuid: string, leaseHolder: string | null }

const why = qemuUnavailable() ?? guestUnavailable()
t.test('live migration A → B with the data following', { skip: why === null ? false : `QEMU cannot run here: ${why}` }, async (t) => {
  const image = ensureGuest()
  const s = await startWanSites(t, { delayMs: 5 })
  const zk = s.zk.connectString
  const dir = makeTempDir(t, 'migration')
  t.equal((await runCli(['disk', 'create', 'vm1', '--size', `${DISK_MIB}M`, '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
  const fill = randomBytes(rng(21), (DISK_MIB - 8) * MiB)
  {
    const fh = await fs.promises.open(path.join(s.a.mountPoint, 'vm1'), 'r+')
    await fh.write(fill, 0, fill.length, FILL_FROM)
    await fh.close()
  }
  const hookA = await installHookFor(dir, zk, 'hv-a', s.a.mountPoint)
  // The hook's copy-rate cap: 12 MiB × 2 targets at 0.6 MB/s is ~40 s of copying, so the copy is
  // still running when the VM moves even when a loaded machine makes each hook call take seconds.
  const hookB = await installHookFor(dir, zk, 'hv-b', s.b.mountPoint, ['--rate', '0.6'])
  const xmlA = domainXml('vm1', [path.join(s.a.mountPoint, 'vm1')])
  const xmlB = domainXml('vm1', [path.join(s.b.mountPoint, 'vm1')])
  const hook = async (h: { hook: string }, args: [string, string, string, string], xml: string): Promise<void> => {
    const r = await runHookScript(h.hook, args, xml)
    t.equal(r.code, 0, `hook ${args.slice(1).join(' ')}: exit 0`)
    t.equal(r.stdout, '', `hook ${args.slice(1).join(' ')}: no XML on stdout`)
  }
  const status = async (): Promise<Status | undefined> => (await cliJson<Status[]>(['relocate', 'status', 'vm1'], zk))[0]

  // Start on A, as libvirt would: prepare, start, (QEMU), started.
  await hook(hookA, ['vm1', 'prepare', 'begin', '-'], xmlA)
  await hook(hookA, ['vm1', 'start', 'begin', '-'], xmlA)
  const scratch = path.join(dir, 'probe.raw')
  fs.writeFileSync(scratch, Buffer.alloc(0))
  fs.truncateSync(scratch, 16 * MiB)
  const accel = await chooseAccel(image, scratch)
  t.comment(`accelerator: ${accel.accel} (${accel.why})`)
  const guest = { image, dir, accel: accel.accel, slots: SLOTS, cache: 'none', aio: 'threads' }
  const src = await QemuGuest.start({ ...guest, disk: path.join(s.a.mountPoint, 'vm1'), name: 'src' })
  t.teardown(() => src.stop())
  await hook(hookA, ['vm1', 'started', 'begin', '-'], xmlA)
  t.ok(hookLog(hookA.log).some(l => l.op === 'prepare' && l.action === 'already-there'), 'a start on site A: the data is already there')
  await src.waitSerial(/UKAI-GUEST boot/, { timeoutMs: 180_000 })
  await src.waitSerial(new RegExp(`UKAI-GUEST ok seq=${SLOTS + 8} `), { timeoutMs: 120_000 })

  // Destination: migrate begin, prepare, start — then the incoming QEMU, and the migration.
  await hook(hookB, ['vm1', 'migrate', 'begin', '-'], xmlB)
  const started = hookLog(hookB.log).find(l => l.op === 'migrate' && l.action === 'started')
  t.ok(started !== undefined, 'migrate begin on B started the relocation toward site-b')
  t.equal(started?.executor, 'hv-a', 'executed by the source agent while the VM runs there')
  await hook(hookB, ['vm1', 'prepare', 'begin', '-'], xmlB)
  await hook(hookB, ['vm1', 'start', 'begin', '-'], xmlB)
  const atStart = await status()
  t.equal(atStart?.state, 'copying', 'the copy is under way when the VM moves')
  const mig = await liveMigrate(src, { ...guest, disk: path.join(s.b.mountPoint, 'vm1'), name: 'dst' })
  const dst = mig.dest
  t.teardown(() => dst.stop())
  // From the switch on: who runs the relocation, until it ends.
  const executors = new Set<string>()
  const atSwitch = await status()
  const watching = (async (): Promise<Status | undefined> => {
    const deadline = Date.now() + 180_000
    for (;;) {
      const st = await status()
      if (st?.executor !== undefined && st.executor !== '') executors.add(st.executor)
      if (st === undefined || st.state === 'done' || st.state === 'paused' || Date.now() > deadline) return st
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  })()
  await hook(hookB, ['vm1', 'started', 'begin', '-'], xmlB)
  const srcLast = src.progress().lastSeq
  t.comment(`migration: ${mig.status}, downtime ${mig.downtimeMs} ms (QEMU), total ${mig.totalTimeMs} ms, ${(mig.ramTransferredBytes / MiB).toFixed(1)} MiB of RAM sent; the guest was at round ${srcLast}`)
  // The source QEMU ends (libvirt: stopped, release on the source).
  await src.qmp?.execute('quit').catch(() => {})
  await src.stop()
  await hook(hookA, ['vm1', 'stopped', 'end', '-'], xmlA)
  await hook(hookA, ['vm1', 'release', 'end', 'migrated'], xmlA)
  const rel = hookLog(hookA.log).find(l => l.op === 'release' && l.lease !== undefined)
  t.ok(rel !== undefined && rel.lease !== 'still-held' && rel.lease !== 'still-open-here', `release on A: the lease is ${rel?.lease}`)

  // The guest goes on on B, verifying what A wrote; its writes moved the lease to hv-b.
  await dst.waitSerial(new RegExp(`UKAI-GUEST ok seq=${srcLast + 40} `), { timeoutMs: 120_000 })
  const end = await watching
  t.equal(end?.state, 'done', `the relocation completed (${end?.reason ?? ''})`)
  t.comment(`relocation: ${((end?.finishedAtMs ?? 0) - (end?.createdAtMs ?? 0))} ms from the hook's migrate begin to done; executors seen after the switch: ${[...executors].join(', ') || '-'}`)
  if (atSwitch?.state === 'copying' && !executors.has('hv-b')) for (const ag of [s.a, s.b]) {
    const lines = fs.readFileSync(ag.logFile, 'utf8').split('\n').filter(l => /relocation|lease|hand-over/.test(l)).map(l => { try { const j = JSON.parse(l); return `${j.time} ${ag.host}: ${j.msg} ${j.err ?? j.reason ?? ''}` } catch { return '' } })
    t.comment(lines.join('\n'))
  }
  if (atSwitch?.state === 'copying') t.ok(executors.has('hv-b'), 'after the switch the relocation went on on the destination agent')
  else t.comment(`the relocation was already ${atSwitch?.state} at the switch`)
  await dst.waitSerial(new RegExp(`UKAI-GUEST ok seq=${srcLast + 60} `), { timeoutMs: 120_000 })
  await dst.qmp?.execute('stop')
  const pSrc = src.progress()
  const pDst = dst.progress()
  t.same([...pSrc.fails, ...pDst.fails], [], 'every verification passed, before and after the switch')
  t.ok(pDst.lastSeq > srcLast + 50, `the guest went on from round ${srcLast} to ${pDst.lastSeq} on B`)
  t.equal(dst.serial.filter(l => /UKAI-GUEST boot/.test(l.text)).length, 0, 'the destination did not boot the guest again: it is the same run')

  const rs = rounds(src, dst)
  const before = roundStats(rs, 0, mig.completedAtMs - mig.totalTimeMs)
  const across = roundStats(rs.filter(r => r.seq >= srcLast - 1 && r.seq <= srcLast + 2), 0, Infinity)
  const after = roundStats(rs.filter(r => r.seq > srcLast + 2), 0, Infinity)
  t.comment(`guest round (4 KiB O_DIRECT write + read-back + compare): before median ${before.medianMs} ms, p99 ${before.p99Ms} ms; across the switch max ${across.maxMs} ms; after median ${after.medianMs} ms, p99 ${after.p99Ms} ms`)

  // Where the switch-over's time went: the lease moving, relative to the end of the migration.
  const logTimes = (file: string, msg: string): number[] => fs.readFileSync(file, 'utf8').split('\n').flatMap(l => { try { const j = JSON.parse(l); return j.msg === msg && j.disk === 'vm1' ? [j.time as number] : [] } catch { return [] } })
  const askedMs = logTimes(s.b.logFile, 'lease held elsewhere; asked for hand-over').find(x => x >= mig.completedAtMs - mig.downtimeMs - 2000)
  const gotMs = logTimes(s.b.logFile, 'lease acquired').find(x => x >= (askedMs ?? 0))
  const firstDst = rs.find(r => r.seq > srcLast)
  t.comment(`switch-over: migration done at 0 ms; hv-b asked for the lease at ${askedMs === undefined ? '?' : askedMs - mig.completedAtMs} ms, had it at ${gotMs === undefined ? '?' : gotMs - mig.completedAtMs} ms; first guest round on B ended at ${firstDst === undefined ? '?' : firstDst.atMs - mig.completedAtMs} ms`)

  const info = await cliJson<Info>(['disk', 'info', 'vm1'], zk)
  t.equal(info.leaseHolder, 'hv-b', 'the lease is with the destination')
  t.same(info.blocksPerSite, { 'site-b': DISK_MIB }, 'the disk lives at site B only')
  let onA = 0
  for (const n of [s.nodes.a1, s.nodes.a2]) {
    const client = new StorageClient({ nodeId: n.id, address: n.address })
    try { onA += (await client.listBlocks({ diskUuid: info.uuid })).length } finally { client.close() }
  }
  t.equal(onA, 0, "site A's nodes hold none of its blocks")
  await dst.stop()
  const fh = await fs.promises.open(path.join(s.b.mountPoint, 'vm1'), 'r')
  const got = Buffer.alloc(fill.length)
  await fh.read(got, 0, got.length, FILL_FROM)
  await fh.close()
  t.equal(sha256(got), sha256(fill), 'the data written before the migration reads back the same on B')
})
