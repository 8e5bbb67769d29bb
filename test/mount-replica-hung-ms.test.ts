// `ukai mount --replica-hung-ms MS`: a bad bound is refused before the mount starts; a good one
// is the bound a write waits on a hung (SIGSTOPped) replica before leaving it behind. The bound
// is set well above the default (2.5 s) so the test proves it is used with a lower limit on the
// wait, which a loaded machine can only make longer, never shorter.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { REPLICA_HUNG_MS_DEFAULT } from '../src/storagenode/client'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { replicaStates } from './helpers/replica-faults'

const KiB = 1024
const HUNG_MS = 6_000
// The first hung check counts silence from the oldest request outstanding; a round-trip probe
// sent up to ~1 s before the write can start it early.
const WAIT_MIN_MS = HUNG_MS - 2_000
// Generous: below the 10 s call deadline, which would end the wait without any hung bound.
const WAIT_MAX_MS = 9_800

t.test('bad --replica-hung-ms values are refused', async (t) => {
  for (const value of ['0', '1000', 'soon', '2.5']) {
    const res = await runCli(['mount', '/nonexistent-mnt', '--site', 'site-a', '--replica-hung-ms', value])
    t.equal(res.code, 2, `--replica-hung-ms ${value}: exit 2`)
    t.match(res.stderr, new RegExp(`bad --replica-hung-ms '${value.replace('.', '\\.')}'`), `--replica-hung-ms ${value}: the message names the flag and the value`)
  }
  const help = await runCli(['mount', '--help'])
  t.match(help.stdout, /--replica-hung-ms <ms>/, 'listed in ukai mount --help')
})

t.test('a hung replica is left behind after --replica-hung-ms', { skip: fuseUnavailable() ?? false }, async (t) => {
  t.ok(HUNG_MS - REPLICA_HUNG_MS_DEFAULT > 2_000, 'the bound under test is far from the default')
  const zk = await startZk(t)
  await startNode(t, { zk, id: 'a1', site: 'site-a' })
  const a2 = await startNode(t, { zk, id: 'a2', site: 'site-a' })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--replica-hung-ms', String(HUNG_MS)] })
  const res = await runCli(['disk', 'create', 'vol', '--size', '4M', '--block-size', '256K', '--nodes', 'a1,a2'], { zk: zk.connectString })
  t.equal(res.code, 0, res.stderr)
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(async () => await fh.close().catch(() => {}))
  const first = Buffer.alloc(64 * KiB, 1)
  await fh.write(first, 0, first.length, 0)
  await fh.sync()

  await a2.kill('SIGSTOP')
  let stopped = true
  t.teardown(async () => { if (stopped) await a2.kill('SIGCONT') })
  const second = Buffer.alloc(64 * KiB, 2)
  const started = Date.now()
  await fh.write(second, 0, second.length, 1024 * KiB)
  const waitedMs = Date.now() - started
  t.comment(`measured: write with a2 stopped took ${waitedMs} ms (--replica-hung-ms ${HUNG_MS}, default ${REPLICA_HUNG_MS_DEFAULT})`)
  t.ok(waitedMs >= WAIT_MIN_MS, `the write waited for the bound given (${waitedMs} ms >= ${WAIT_MIN_MS} ms), not the default`)
  t.ok(waitedMs < WAIT_MAX_MS, `and not longer (${waitedMs} ms < ${WAIT_MAX_MS} ms)`)
  const states = await replicaStates(zk.connectString, 'vol', 'a2')
  t.equal(states[4], 'stale', 'a2 is stale for the block it missed')

  await a2.kill('SIGCONT')
  stopped = false
  const got = Buffer.alloc(second.length)
  await fh.read(got, 0, got.length, 1024 * KiB)
  t.same(got, second, 'the write reads back')
})
