// Live migration of a running guest from site A to site B while its data follows, as an operator
// with libvirt would run it (libvirt itself is test/libvirtd.test.ts): the installed hook is called
// with the arguments and XML libvirt passes at each step, QEMU is driven over QMP. The disk is the
// FUSE file on each host's mount, or each agent's NBD socket (QEMU's NBD client):
//
//   source QEMU on hv-a's mount/socket ──migrate (tcp, loopback)──▶ destination QEMU on hv-b's
//   the guest writes and re-verifies its disk every round, on both sides of the switch-over
//
// Checks: every verification passes; the guest goes on from where it was; the destination's
// first write moves the lease; the relocation the hook started goes on on hv-b; once it is done
// the disk's blocks are only at site B. Reports the switch-over's phases (switchPhases).
import fs from 'node:fs'
import path from 'node:path'
import { StorageClient } from '../../src/storagenode/client'
import { makeTempDir } from './cluster'
import { cliJson, runCli } from './cli'
import { ensureGuest } from './guest'
import { domainXml, hookLog, installHookFor, nbdDomain, runHookScript } from './libvirt'
import { liveMigrate, roundStats, rounds, type MigrationResult } from './migrate'
import { randomBytes, rng, sha256 } from './model'
import { QemuGuest, chooseAccel, type GuestOptions } from './qemu'
import { startWanSites, type WanSites } from './sites'

const MiB = 1024 * 1024
const SLOTS = 64
const DISK_MIB = 20
const FILL_FROM = 1 * MiB  // the guest's records live in the first 256 KiB; the rest is data to move

interface Status { state: string, executor: string, reason: string, createdAtMs: number, finishedAtMs: number }
interface Info { blocksPerSite: Record<string, number>, uuid: string, leaseHolder: string | null }

// The part of a tap Test the scenario uses.
export interface ScenarioTest {
  teardown (fn: () => unknown): void
  comment (...args: unknown[]): void
  ok (v: unknown, msg: string): unknown
  equal (a: unknown, b: unknown, msg: string): unknown
  same (a: unknown, b: unknown, msg: string): unknown
}

export type DiskPath = 'fuse' | 'nbd'

// Times of an agent's JSON log lines with MSG about DISK.
export function logTimes (file: string, msg: string, disk: string): number[] {
  return fs.readFileSync(file, 'utf8').split('\n').flatMap(l => { try { const j = JSON.parse(l); return j.msg === msg && j.disk === disk ? [j.time as number] : [] } catch { return [] } })
}

// An agent's JSON log lines with MSG about DISK, whole.
export function logLines (file: string, msg: string, disk: string): Array<Record<string, unknown> & { time: number }> {
  return fs.readFileSync(file, 'utf8').split('\n').flatMap(l => { try { const j = JSON.parse(l); return j.msg === msg && j.disk === disk ? [j] : [] } catch { return [] } })
}

// What the source agent's flush at the stop waited for (its 'flush done' line, logged at debug:
// the bench runs the agents with UKAI_LOG_LEVEL=debug; see src/vdisk/dirty-flush.ts).
export interface AgentFlush { cause: string, blocks: number, replicas: number, nodeMs: Record<string, number>, tookMs: number, endMs: number | null }

// QEMU trace events the switch-over breakdown reads (both QEMU processes enable them).
export const SWITCH_TRACE = [
  'vm_state_notify', 'virtio_blk_handle_write', 'virtio_blk_handle_read', 'virtio_blk_rw_complete',
  'nbd_send_request', 'nbd_receive_simple_reply', 'nbd_receive_structured_reply_chunk', 'thread_pool_submit', 'thread_pool_complete'
]

// The switch-over, each time in ms relative to the source VM's stop (the start of QEMU's downtime).
export interface SwitchPhases {
  downtimeMs: number                   // QEMU's figure
  srcFlushSentMs: number | null        // the source's flush at the stop (NBD: the flush request; a
  srcFlushDoneMs: number | null        // file: the longest thread-pool job, the fdatasync) and its end
  srcAgentFlush: AgentFlush | null     // hv-a's flush that ended the stop-time flush (null: none logged)
  srcAgentFlushesBehind: number        // hv-a's background flushes of the disk before the stop
  destResumeMs: number | null          // the destination VM runs
  guestIoOnB: string[]                 // the guest's first requests on B: 'read|write START→END'
  guestFirstWriteMs: number | null     // the guest's first write on B reaches virtio-blk
  firstWriteSentMs: number | null      // QEMU sends it to hv-b (NBD only)
  askedMs: number | null               // hv-b: lease held elsewhere; asked for hand-over
  handoverRequestedMs: number | null   // hv-a saw the request
  releasedMs: number | null            // hv-a: lease released (after flushing)
  acquiredMs: number | null            // hv-b: lease acquired
  leaseReadyMs: number | null          // hv-b: every replica's node fenced and the record re-read
  firstWriteRepliedMs: number | null   // hv-b acknowledged that write (NBD only)
  guestFirstWriteDoneMs: number | null // virtio-blk completed it to the guest
  firstRoundOnBMs: number | null       // first guest round that ended on B
  longestRoundAcrossMs: number         // the longest guest round around the switch
}

const NBD_CMD = { write: 1, flush: 3 }

function field (args: string, re: RegExp): string | undefined { return re.exec(args)?.[1] }

// S null: a migration on a plain local file (no agents; the lease fields stay null).
export function switchPhases (s: WanSites | null, disk: string, src: QemuGuest, mig: MigrationResult, srcLast: number): SwitchPhases {
  const se = src.traceEvents()
  const de = mig.dest.traceEvents()
  const stopAt = se.find(e => e.name === 'vm_state_notify' && /^running 0/.test(e.args) && e.atMs > mig.completedAtMs - mig.totalTimeMs)?.atMs ??
    src.qmp?.events.filter(e => e.event === 'STOP').map(e => e.atMs).pop() ?? (mig.completedAtMs - mig.downtimeMs)
  const rel = (x: number | undefined): number | null => x === undefined ? null : Math.round(x - stopAt)
  const after = (xs: number[], from = stopAt - 2000): number | undefined => xs.find(x => x >= from)
  const cmdType = (e: { args: string }): number => Number(field(e.args, /\.type = (\d+)/) ?? -1)
  const handle = (e: { args: string }): string | undefined => field(e.args, /handle = (\d+)/)
  const replyOf = (evs: typeof se, sent: typeof se[number] | undefined): number | undefined => sent === undefined
    ? undefined
    : evs.find(e => (e.name === 'nbd_receive_simple_reply' || e.name === 'nbd_receive_structured_reply_chunk') && e.atMs >= sent.atMs && handle(e) === handle(sent))?.atMs
  // Source: the flush at the stop (do_vm_stop flushes every drive before the last RAM copy).
  const srcFlush = se.find(e => e.atMs >= stopAt - 50 && e.name === 'nbd_send_request' && cmdType(e) === NBD_CMD.flush)
  const reqOf = (e: { args: string }): string | undefined => field(e.args, /req (0x[0-9a-f]+)/)
  let srcJob: { start: number, end: number } | undefined
  if (srcFlush === undefined) {
    for (const sub of se.filter(e => e.name === 'thread_pool_submit' && e.atMs >= stopAt - 50 && e.atMs <= stopAt + mig.downtimeMs)) {
      const end = se.find(e => e.name === 'thread_pool_complete' && e.atMs >= sub.atMs && reqOf(e) === reqOf(sub))
      if (end !== undefined && (srcJob === undefined || end.atMs - sub.atMs > srcJob.end - srcJob.start)) srcJob = { start: sub.atMs, end: end.atMs }
    }
  }
  // Destination: its first requests once it runs; the first write from the guest to hv-b and back.
  const resume = de.find(e => e.name === 'vm_state_notify' && /^running 1/.test(e.args))
  const from = resume?.atMs ?? stopAt
  const guestIoOnB = de.filter(e => (e.name === 'virtio_blk_handle_write' || e.name === 'virtio_blk_handle_read') && e.atMs >= from).slice(0, 6).map((e) => {
    const done = de.find(d => d.name === 'virtio_blk_rw_complete' && d.atMs >= e.atMs && reqOf(d) === reqOf(e))
    return `${e.name === 'virtio_blk_handle_write' ? 'write' : 'read'} ${rel(e.atMs) ?? '?'}→${rel(done?.atMs) ?? '?'}`
  })
  const guestWrite = de.find(e => e.name === 'virtio_blk_handle_write' && e.atMs >= from)
  const req = guestWrite === undefined ? undefined : reqOf(guestWrite)
  const sent = de.find(e => e.atMs >= from && e.name === 'nbd_send_request' && cmdType(e) === NBD_CMD.write)
  const guestDone = de.find(e => e.name === 'virtio_blk_rw_complete' && guestWrite !== undefined && e.atMs >= guestWrite.atMs && field(e.args, /req (0x[0-9a-f]+)/) === req)
  const lines = (host: 'a' | 'b', msg: string): number[] => s === null ? [] : logTimes(s[host].logFile, msg, disk)
  const asked = after(lines('b', 'lease held elsewhere; asked for hand-over'))
  // hv-a's flush that answered the stop-time flush: the last guest flush that ended between the
  // request and its answer (a background flush running then ends first; the guest's shares the next).
  const flushes = s === null ? [] : logLines(s.a.logFile, 'flush done', disk)
  const sentAt = srcFlush?.atMs ?? srcJob?.start
  const doneAt = replyOf(se, srcFlush) ?? srcJob?.end
  const inWindow = sentAt === undefined ? [] : flushes.filter(f => f.time >= sentAt - 5 && f.time <= (doneAt ?? Infinity) + 5)
  const agentFlush = inWindow.filter(f => f.cause === 'guest').pop() ?? inWindow.pop()
  const srcAgentFlush = agentFlush === undefined
    ? null
    : { cause: String(agentFlush.cause), blocks: Number(agentFlush.blocks), replicas: Number(agentFlush.replicas), nodeMs: agentFlush.nodeMs as Record<string, number>, tookMs: Number(agentFlush.tookMs), endMs: rel(agentFlush.time) }
  const rs = rounds(src, mig.dest)
  return {
    downtimeMs: mig.downtimeMs,
    srcFlushSentMs: rel(srcFlush?.atMs ?? srcJob?.start),
    srcFlushDoneMs: rel(replyOf(se, srcFlush) ?? srcJob?.end),
    srcAgentFlush,
    srcAgentFlushesBehind: flushes.filter(f => f.cause === 'behind' && f.time < stopAt).length,
    destResumeMs: rel(resume?.atMs ?? mig.dest.qmp?.events.find(e => e.event === 'RESUME')?.atMs),
    guestIoOnB,
    guestFirstWriteMs: rel(guestWrite?.atMs),
    firstWriteSentMs: rel(sent?.atMs),
    askedMs: rel(asked),
    handoverRequestedMs: rel(after(lines('a', 'hand-over requested'))),
    releasedMs: rel(after(lines('a', 'lease released'))),
    acquiredMs: rel(lines('b', 'lease acquired').find(x => x >= (asked ?? stopAt - 2000))),
    leaseReadyMs: rel(lines('b', 'lease ready for writes').find(x => x >= (asked ?? stopAt - 2000))),
    firstWriteRepliedMs: rel(replyOf(de, sent)),
    guestFirstWriteDoneMs: rel(guestDone?.atMs),
    firstRoundOnBMs: rel(rs.find(r => r.seq > srcLast)?.atMs),
    longestRoundAcrossMs: roundStats(rs.filter(r => r.seq >= srcLast - 1 && r.seq <= srcLast + 2), 0, Infinity).maxMs
  }
}

export async function migrationAtoB (t: ScenarioTest, via: DiskPath): Promise<SwitchPhases> {
  const image = ensureGuest()
  const s = await startWanSites(t, { delayMs: 5, nbd: via === 'nbd' })
  const zk = s.zk.connectString
  const dir = makeTempDir(t, `migration-${via}`)
  t.equal((await runCli(['disk', 'create', 'vm1', '--size', `${DISK_MIB}M`, '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0, 'disk create vm1')
  const fill = randomBytes(rng(21), (DISK_MIB - 8) * MiB)
  {
    const fh = await fs.promises.open(path.join(s.a.mountPoint, 'vm1'), 'r+')
    await fh.write(fill, 0, fill.length, FILL_FROM)
    await fh.close()
  }
  const nbdArgs = (d: string | undefined): string[] => d === undefined ? [] : ['--nbd-dir', d]
  const hookA = await installHookFor(dir, zk, 'hv-a', s.a.mountPoint, nbdArgs(s.nbdDir?.a))
  // The hook's copy-rate cap: 12 MiB × 2 targets at 0.6 MB/s is ~40 s of copying, so the copy is
  // still running when the VM moves even when a loaded machine makes each hook call take seconds.
  const hookB = await installHookFor(dir, zk, 'hv-b', s.b.mountPoint, ['--rate', '0.6', ...nbdArgs(s.nbdDir?.b)])
  const socket = (side: 'a' | 'b'): string => path.join(s.nbdDir?.[side] ?? '', 'vm1.sock')
  const xmlA = via === 'nbd' ? nbdDomain('vm1', [{ socket: socket('a'), exportName: 'vm1' }]) : domainXml('vm1', [path.join(s.a.mountPoint, 'vm1')])
  const xmlB = via === 'nbd' ? nbdDomain('vm1', [{ socket: socket('b'), exportName: 'vm1' }]) : domainXml('vm1', [path.join(s.b.mountPoint, 'vm1')])
  const diskOn = (side: 'a' | 'b'): Pick<GuestOptions, 'disk' | 'nbd'> => via === 'nbd'
    ? { disk: socket(side), nbd: { export: 'vm1' } }
    : { disk: path.join(s[side].mountPoint, 'vm1') }
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
  t.comment(`accelerator: ${accel.accel} (${accel.why}); disk via ${via}`)
  const guest = { image, dir, accel: accel.accel, slots: SLOTS, cache: 'none', aio: 'threads', trace: SWITCH_TRACE }
  const src = await QemuGuest.start({ ...guest, ...diskOn('a'), name: 'src' })
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
  const mig = await liveMigrate(src, { ...guest, ...diskOn('b'), name: 'dst' })
  const dst = mig.dest
  t.teardown(() => dst.stop())
  // The source QEMU ends at once, as libvirt's Confirm phase ends it right after the destination
  // resumed (its hooks, stopped and release, follow below).
  await src.qmp?.execute('quit').catch(() => {})
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
  // The source QEMU is gone (libvirt: stopped, release on the source).
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
  const after = roundStats(rs.filter(r => r.seq > srcLast + 2), 0, Infinity)
  const phases = switchPhases(s, 'vm1', src, mig, srcLast)
  t.comment(`guest round (4 KiB O_DIRECT write + read-back + compare): before median ${before.medianMs} ms, p99 ${before.p99Ms} ms; across the switch max ${phases.longestRoundAcrossMs} ms; after median ${after.medianMs} ms, p99 ${after.p99Ms} ms`)
  t.comment(`switch-over (ms from the source's STOP): ${JSON.stringify(phases)}`)

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
  return phases
}
