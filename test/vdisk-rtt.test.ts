// Round trips and replica choice: a WAN proxy adds 20 ms each way in front of one storage node
// (the agent reaches it through `--node-address`). The agent's measured round trips show in
// `ukai node list --from`, and reads of a disk replicated on the slow and the fast node are served
// by the fast one — even though the slow one is at the agent's own site.
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { startWanProxy } from './helpers/wan'

const KiB = 1024
const MiB = 1024 * KiB
const DELAY_MS = 20

interface NodeRow { id: string, site: string, rttMs: number | null }
interface SiteRow { site: string, nodes: string[], nodesAlive: number, agents: string[], agentsAlive: number, capacityBytes: number, freeBytes: number }

t.test('measured round trips order replicas', async (t) => {
  const zk = await startZk(t)
  const [slow] = await Promise.all([
    startNode(t, { zk, id: 'a1', site: 'site-a', capacity: '1G' }),
    startNode(t, { zk, id: 'b1', site: 'site-b', capacity: '1G' })
  ])
  const proxy = await startWanProxy(t, { target: slow.address, delayMs: DELAY_MS })
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--node-address', `a1=${proxy.address}`, '--rtt-interval-ms', '300'] })

  let rows: NodeRow[] = []
  const rtt = (id: string): number => rows.find(r => r.id === id)?.rttMs ?? NaN
  // Until both are measured and the smoothed values settled (the first samples are taken while
  // the agent is still starting).
  for (let i = 0; i < 75; i++) {
    rows = await cliJson<NodeRow[]>(['node', 'list', '--from', 'hv-a'], zk.connectString)
    if (rtt('a1') >= 30 && rtt('b1') < rtt('a1') - DELAY_MS) break
    await sleep(200)
  }
  t.comment(`round trips from hv-a: a1 ${rtt('a1')} ms (through the proxy), b1 ${rtt('b1')} ms`)
  t.ok(rtt('a1') >= 30, `a1 behind the ${DELAY_MS} ms proxy measures ≥ 30 ms (${rtt('a1')})`)
  // Relative (it was < 10 ms, which a loaded machine need not meet): the direct node is nearer by
  // at least one one-way delay of the proxy.
  t.ok(rtt('b1') < rtt('a1') - DELAY_MS, `b1, direct, measures less than a1 minus ${DELAY_MS} ms (${rtt('b1')} vs ${rtt('a1')})`)
  t.ok(proxy.stats().connectionsTotal >= 1, 'the agent reached a1 through the proxy')

  const table = await runCli(['node', 'list', '--from', 'hv-a'], { zk: zk.connectString })
  t.equal(table.code, 0, table.stderr)
  t.match(table.stdout, /RTT FROM hv-a/, 'the table has an RTT column')
  const none = await runCli(['node', 'list', '--from', 'nobody'], { zk: zk.connectString })
  t.equal(none.code, 0)
  t.match(none.stderr, /no round-trip report from host 'nobody'/)

  const sites = await cliJson<SiteRow[]>(['site', 'list'], zk.connectString)
  t.same(sites.map(s => [s.site, s.nodes, s.nodesAlive, s.agents, s.agentsAlive]), [
    ['site-a', ['a1'], 1, ['hv-a'], 1],
    ['site-b', ['b1'], 1, [], 0]
  ], 'site list: nodes, liveness and agents per site')
  t.ok(sites.every(s => s.capacityBytes === 1024 ** 3 && s.freeBytes > 0), 'site list: capacity of the live nodes')
  const siteTable = await runCli(['site', 'list'], { zk: zk.connectString })
  t.equal(siteTable.code, 0, siteTable.stderr)
  t.match(siteTable.stdout, /site-a\s.*a1.*1\/1.*hv-a/)

  const res = await runCli(['disk', 'create', 'vol', '--size', '4M', '--block-size', '64K', '--nodes', 'a1,b1'], { zk: zk.connectString })
  t.equal(res.code, 0, res.stderr)
  const file = path.join(agent.mountPoint, 'vol')
  for (let i = 0; i < 50 && !fs.existsSync(file); i++) await sleep(100)
  const data = randomBytes(rng(11), 4 * MiB)
  const fh = await fs.promises.open(file, 'r+')
  try {
    await fh.write(data, 0, data.length, 0) // to both replicas
    const before = proxy.stats().bytesDown
    const rand = rng(12)
    const latencies: number[] = []
    const buf = Buffer.alloc(4 * KiB)
    let mismatches = 0
    for (let i = 0; i < 100; i++) {
      const off = Math.floor(rand() * (4 * MiB / (4 * KiB))) * 4 * KiB
      const t0 = performance.now()
      await fh.read(buf, 0, buf.length, off)
      latencies.push(performance.now() - t0)
      if (!buf.equals(data.subarray(off, off + buf.length))) mismatches++
    }
    const fromSlow = proxy.stats().bytesDown - before
    latencies.sort((a, b) => a - b)
    const median = latencies[latencies.length >> 1]
    t.comment(`100 random 4 KiB reads: median ${median.toFixed(2)} ms; bytes from a1 meanwhile ${fromSlow}`)
    t.equal(mismatches, 0, 'every read returned what was written')
    t.ok(median < DELAY_MS, `reads take far less than a round trip to a1 (median ${median.toFixed(2)} ms)`)
    t.ok(fromSlow < 100 * 4 * KiB / 4, `a1 (slow) served none of the reads (${fromSlow} bytes through its proxy, probes only)`)
    const whole = Buffer.alloc(4 * MiB)
    await fh.read(whole, 0, whole.length, 0)
    t.equal(sha256(whole), sha256(data), 'the whole disk reads back')
  } finally {
    await fh.close()
  }
  await agent.stop() // before the proxy closes: its last flush goes through it
})
