// Per-disk QoS (`ukai disk qos`) measured with fio against real processes: ZooKeeper, two storage
// nodes, one agent serving the FUSE mount and NBD sockets. A disk capped at N IOPS measures
// within ±10 % of N (random 4 KiB reads and writes, the burst spent in fio's ramp time), an
// uncapped disk beside it on the same mount is not held to the cap, a live change takes effect
// within two seconds without a remount, an MB/s cap holds, and the NBD export is capped too.
// Bad input is refused naming the flag, with nothing changed. (The token bucket's own arithmetic
// is test/lib-io-throttle.test.ts, under a hand-moved clock.)
import { execFile, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { cliOk, runCli } from './helpers/cli'
import { fuseUnavailable, makeTempDir, missingCli } from './helpers/cluster'
import { startNbdCluster, waitForSocket } from './helpers/nbd'
import { RawNbdClient } from './helpers/nbd-client'
import * as P from '../src/nbd/protocol'

const exec = promisify(execFile)
const MiB = 1024 * 1024
const IOPS_CAP = 200
const RUNTIME_S = 8
const RAMP_S = 2  // spends the burst (1 s of the rate by default) before fio starts counting

interface FioResult { readIops: number, writeIops: number, readBps: number, writeBps: number }

const fioUnavailable = (): string | null => spawnSync('fio', ['--version']).status === 0 ? null : 'fio is not installed'
const skip = missingCli('mount') ?? fuseUnavailable() ?? fioUnavailable()

// fio jobs, one per target, run together; each result as IOPS and bytes/s.
async function fio (targets: Array<{ rw: string, bs: string, file?: string, nbdUri?: string, iopsLog?: string }>, runtimeS = RUNTIME_S, rampS = RAMP_S): Promise<FioResult[]> {
  const args = ['--output-format=json', '--time_based', `--runtime=${runtimeS}`, `--ramp_time=${rampS}`, '--group_reporting=0']
  targets.forEach((tg, i) => {
    args.push(`--name=job${i}`, `--rw=${tg.rw}`, `--bs=${tg.bs}`, '--size=48M', '--iodepth=4', '--randrepeat=0')
    if (tg.nbdUri !== undefined) args.push('--ioengine=nbd', `--uri=${tg.nbdUri}`)
    else args.push('--ioengine=libaio', '--direct=1', `--filename=${tg.file as string}`)
    if (tg.iopsLog !== undefined) args.push(`--write_iops_log=${tg.iopsLog}`, '--log_avg_msec=500')
  })
  const { stdout, stderr } = await exec('fio', args, { maxBuffer: 16 * MiB, timeout: (runtimeS + rampS + 60) * 1000 })
  const json = stdout.indexOf('{')  // fio's nbd engine prints "connected to NBD server" first
  if (json < 0) throw new Error(`fio printed no result: ${stdout}${stderr}`)
  return JSON.parse(stdout.slice(json)).jobs.map((j: any) => ({ readIops: j.read.iops, writeIops: j.write.iops, readBps: j.read.bw_bytes, writeBps: j.write.bw_bytes }))
}

const within = (value: number, target: number, frac: number): boolean => Math.abs(value - target) <= target * frac

t.test('QoS per disk, measured with fio', { skip: skip ?? false }, async (t) => {
  const c = await startNbdCluster(t)
  const zk = c.zk.connectString
  const tmp = makeTempDir(t, 'qos')
  for (const d of ['capped', 'free']) await cliOk(t, ['disk', 'create', d, '--size', '64M', '--block-size', '1M', '--nodes', 'a1,a2'], zk)
  const capped = path.join(c.agent.mountPoint, 'capped')
  const free = path.join(c.agent.mountPoint, 'free')
  // Written once, so reads come from the nodes' files rather than holes.
  for (const f of [capped, free]) await exec('dd', ['if=/dev/zero', `of=${f}`, 'bs=1M', 'count=48', 'oflag=direct', 'conv=notrunc'])

  t.test('bad input: the flag is named, exit non-zero, nothing changed', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', '77'], zk)
    const cases: Array<[string[], RegExp]> = [
      [['--iops', '-5'], /--iops/],
      [['--iops', 'abc'], /bad --iops 'abc'/],
      [['--iops', '1.5'], /bad --iops '1.5'/],
      [['--iops', '99999999999'], /bad --iops/],
      [['--mbps', 'fast'], /bad --mbps 'fast'/],
      [['--mbps', '5000000'], /bad --mbps 5000000/],
      [['--burst', '0'], /bad --burst 0/],
      [['--burst-iops', '10', '--burst', '2'], /either --burst SECONDS or --burst-iops/],
      [['--burst-mb', '3'], /--burst-mb needs an MB\/s limit/],
      [['--clear', '--iops', '5'], /--clear lifts every limit/]
    ]
    for (const [args, msg] of cases) {
      const r = await runCli(['disk', 'qos', 'capped', ...args], { zk })
      t.not(r.code, 0, `${args.join(' ')}: exit ${r.code}`)
      t.match(r.stderr, msg, `${args.join(' ')}: ${r.stderr.trim()}`)
    }
    const unknown = await runCli(['disk', 'qos', 'nosuchdisk', '--iops', '5'], { zk })
    t.not(unknown.code, 0)
    t.match(unknown.stderr, /unknown disk 'nosuchdisk'/)
    const info = JSON.parse(await cliOk(t, ['disk', 'info', 'capped', '--json'], zk))
    t.same(info.qos, { v: 1, iops: 77, bytesPerSec: 0 }, 'the limits are what they were before the refused changes')
    t.match(await cliOk(t, ['disk', 'info', 'capped'], zk), /qos\s+77 IOPS \(burst 77\)/)
    t.match(await cliOk(t, ['disk', 'qos', 'free'], zk), /disk free: unlimited/)
    const top = JSON.parse(await cliOk(t, ['top', '--json'], zk))
    t.same(top.disks.find((d: any) => d.name === 'capped').qos, { v: 1, iops: 77, bytesPerSec: 0 }, 'ukai top --json shows the cap')
    t.equal(top.disks.find((d: any) => d.name === 'free').qos, null)
    // The cap itself ends the disk's row (past 80 columns: wider terminals and --json show it).
    t.match(await cliOk(t, ['top', '--once'], zk), /2 disks \(1 capped\)/, 'ukai top --once counts the capped disks in its header')
  })

  t.test(`a disk capped at ${IOPS_CAP} IOPS measures within ±10 % of it; an uncapped one beside it is not held to it`, async (t) => {
    const [alone] = await fio([{ rw: 'randread', bs: '4k', file: free }])
    t.comment(`uncapped alone: ${alone.readIops.toFixed(0)} read IOPS`)
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', String(IOPS_CAP)], zk)
    const [cr, fr] = await fio([{ rw: 'randread', bs: '4k', file: capped }, { rw: 'randread', bs: '4k', file: free }])
    t.ok(within(cr.readIops, IOPS_CAP, 0.1), `capped randread: ${cr.readIops.toFixed(1)} IOPS (cap ${IOPS_CAP})`)
    t.ok(fr.readIops > 3 * IOPS_CAP, `uncapped beside it: ${fr.readIops.toFixed(0)} IOPS, well above the cap (alone: ${alone.readIops.toFixed(0)})`)
    const [cw] = await fio([{ rw: 'randwrite', bs: '4k', file: capped }])
    t.ok(within(cw.writeIops, IOPS_CAP, 0.1), `capped randwrite: ${cw.writeIops.toFixed(1)} IOPS (cap ${IOPS_CAP})`)
  })

  t.test('a live change takes effect within two seconds, without a remount', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', String(IOPS_CAP)], zk)
    const log = path.join(tmp, 'live')
    const started = Date.now()
    const run = fio([{ rw: 'randread', bs: '4k', file: capped, iopsLog: log }], 10, 0)
    await new Promise(resolve => setTimeout(resolve, 4000))
    const lowered = IOPS_CAP / 4
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', String(lowered)], zk)
    const changedAtMs = Date.now() - started
    await run
    // fio's log: "msec, avg IOPS over the last 500 ms, dir, bs, offset" per line.
    const rows = fs.readFileSync(`${log}_iops.1.log`, 'utf8').trim().split('\n').map(l => l.split(',').map(Number))
    const avg = (from: number, to: number): number => {
      const sel = rows.filter(r => r[0] > from && r[0] <= to)
      return sel.reduce((s, r) => s + r[1], 0) / Math.max(1, sel.length)
    }
    // fio starts its clock a little after spawn: the windows leave a second of slack each side.
    const before = avg(1500, changedAtMs - 1000)
    const after = avg(changedAtMs + 2000, 10_000)
    t.ok(within(before, IOPS_CAP, 0.15), `before the change: ${before.toFixed(0)} IOPS (cap ${IOPS_CAP})`)
    t.ok(within(after, lowered, 0.15), `from 2 s after the change: ${after.toFixed(0)} IOPS (cap ${lowered})`)
  })

  t.test('an MB/s cap holds (writes of 64 KiB)', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', '0', '--mbps', '2'], zk)
    t.match(await cliOk(t, ['disk', 'qos', 'capped'], zk), /disk capped: 2\.00 MB\/s \(burst 2\.00 MB\)/)
    const [w] = await fio([{ rw: 'randwrite', bs: '64k', file: capped }])
    t.ok(within(w.writeBps, 2e6, 0.1), `capped randwrite: ${(w.writeBps / 1e6).toFixed(2)} MB/s (cap 2 MB/s)`)
    const [r] = await fio([{ rw: 'randread', bs: '128k', file: capped }])
    t.ok(within(r.readBps, 2e6, 0.1), `capped randread: ${(r.readBps / 1e6).toFixed(2)} MB/s (cap 2 MB/s)`)
  })

  t.test('the NBD export of the disk is capped by the same limits', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--clear'], zk)
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', String(IOPS_CAP)], zk)
    await waitForSocket(c.socket('capped'))
    const [n] = await fio([{ rw: 'randread', bs: '4k', nbdUri: c.uri('capped') }])
    t.ok(within(n.readIops, IOPS_CAP, 0.1), `NBD randread: ${n.readIops.toFixed(1)} IOPS (cap ${IOPS_CAP})`)
    const [fr] = await fio([{ rw: 'randread', bs: '4k', nbdUri: c.uri('free') }])
    t.ok(fr.readIops > 3 * IOPS_CAP, `NBD randread of the uncapped disk: ${fr.readIops.toFixed(0)} IOPS`)
  })

  t.test('--clear lifts the cap', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--clear'], zk)
    t.equal(JSON.parse(await cliOk(t, ['disk', 'info', 'capped', '--json'], zk)).qos, null)
    const [r] = await fio([{ rw: 'randread', bs: '4k', file: capped }], 4, 1)
    t.ok(r.readIops > 3 * IOPS_CAP, `after --clear: ${r.readIops.toFixed(0)} IOPS`)
  })

  // Last: it stops the agent.
  t.test('shutdown is not held by the cap: requests an NBD client queued finish at full speed', async (t) => {
    await cliOk(t, ['disk', 'qos', 'capped', '--iops', '1', '--burst-iops', '1'], zk)
    const cl = await RawNbdClient.connect(c.socket('capped'))
    t.teardown(() => cl.destroy())
    await cl.greet()
    await cl.go('capped')
    const n = 30
    const replies = Array.from({ length: n }, (_, i) => cl.request(P.NBD_CMD_READ, i * 4096, 4096))
    await new Promise(resolve => setTimeout(resolve, 1500)) // taken by the agent, waiting at 1 IOPS
    const t0 = Date.now()
    await c.agent.stop()
    const stopMs = Date.now() - t0
    t.ok(stopMs < 10_000, `the agent stopped in ${stopMs} ms with ${n} reads queued at 1 IOPS (at the cap: ~${n} s)`)
    const done = await Promise.allSettled(replies)
    const ok = done.filter(r => r.status === 'fulfilled' && r.value.error === 0).length
    t.equal(ok, n, 'every read the agent took was answered before it closed the connection')
  })
})
