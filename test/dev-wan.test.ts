// `ukai dev up --wan-latency-ms`: one WAN proxy process per (agent, node of another site) link
// and per (site's nodes, node of another site) link, recorded in cluster.json, used by the agents
// (their round trips show it) and by node-to-node copies, and stopped by `ukai dev down` by PID.
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { devDown, readCluster, type ClusterInfo } from '../src/dev/cluster'
import { isAlive, isOurs } from '../src/dev/pids'
import { fuseUnavailable, makeTempDir } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'

const DELAY_MS = 15

t.test('dev up --wan-latency-ms puts a delaying proxy on every cross-site link', { skip: fuseUnavailable() ?? false }, async (t) => {
  const dir = makeTempDir(t, 'devwan')
  t.teardown(async () => { await devDown({ dir }) })
  const up = await runCli(['dev', 'up', '--dir', dir, '--sites', '2', '--nodes-per-site', '1', '--wan-latency-ms', String(DELAY_MS), '--wan-mbps', '100', '--detach', '--json'], { timeoutMs: 90_000 })
  t.equal(up.code, 0, up.stderr)
  const info = JSON.parse(up.stdout) as ClusterInfo
  t.same(readCluster(dir), info, 'cluster.json holds what dev up printed')
  t.same(info.proxies.map(p => [p.host, p.node, p.delayMs, p.mbps]), [
    ['hv-a', 'b1', DELAY_MS, 100], ['hv-b', 'a1', DELAY_MS, 100], ['nodes-site-a', 'b1', DELAY_MS, 100], ['nodes-site-b', 'a1', DELAY_MS, 100]
  ], 'one proxy per cross-site link: agent to node, and the nodes of a site to a far node')
  for (const p of info.proxies) {
    t.ok(isOurs(p.pid, p.argv), `proxy ${p.host} → ${p.node} runs (pid ${p.pid})`)
    t.equal(p.target, info.nodes.find(n => n.id === p.node)?.address)
    const user = p.host.startsWith('nodes-')
      ? info.nodes.find(n => `nodes-${n.site}` === p.host)
      : info.agents.find(a => a.host === p.host)
    const flag = p.host.startsWith('nodes-') ? '--peer-address' : '--node-address'
    t.ok(user?.argv.join(' ').includes(`${flag} ${p.node}=${p.address}`), `${p.host} is told to use the proxy (${flag})`)
  }

  const zk = info.zk.connectString
  const zkAuth = info.zkAuthFile ?? undefined // the cluster's own credentials (dev up made them)
  const tlsDir = info.tlsDir                   // and its own admin certificate
  let rows: Array<{ id: string, rttMs: number | null }> = []
  const rtt = (id: string): number => rows.find(r => r.id === id)?.rttMs ?? NaN
  // The first samples are taken while the cluster is still starting; the smoothed value settles
  // within a few 2 s rounds.
  for (let i = 0; i < 80; i++) {
    rows = await cliJson(['node', 'list', '--from', 'hv-a'], zk, { zkAuth, tlsDir })
    if (rtt('a1') < rtt('b1') - DELAY_MS && rtt('b1') >= 2 * DELAY_MS - 1) break
    await sleep(250)
  }
  t.comment(`from hv-a: a1 ${rtt('a1')} ms, b1 ${rtt('b1')} ms`)
  t.ok(rtt('b1') >= 2 * DELAY_MS - 1, `the other site's node is ≥ 2 × ${DELAY_MS} ms away (${rtt('b1')})`)
  // Relative, not an absolute figure (it was < 10 ms: a loaded 2-core machine answers Stat slower):
  // the own site's node is nearer by at least one one-way delay.
  t.ok(rtt('a1') < rtt('b1') - DELAY_MS, `the own site's node is near (${rtt('a1')} ms, the other site's ${rtt('b1')} ms)`)

  // A relocation's node-to-node copy crosses the WAN: the plan's probe (a1 pulling from b1)
  // measures at least one round trip per chunk through the nodes' proxy.
  t.equal((await runCli(['disk', 'create', 'far', '--size', '4M', '--block-size', '1M', '--replicas', '1', '--site', 'site-b'], { zk, zkAuth, tlsDir })).code, 0)
  fs.writeFileSync(path.join(info.agents[1].mountPoint, 'far'), Buffer.alloc(2 * 1024 * 1024, 9), { flag: 'r+' })
  const plan = await cliJson<{ estimate: { measuredBytesPerSec: number, sampledBlocks: number } }>(['relocate', 'far', '--to', 'site-a', '--dry-run'], zk, { zkAuth, tlsDir })
  t.equal(plan.estimate.sampledBlocks, 2)
  const relocated = await runCli(['relocate', 'far', '--to', 'site-a', '--wait'], { zk, zkAuth, tlsDir, timeoutMs: 60_000 })
  t.equal(relocated.code, 0, relocated.stderr)

  const pids = info.proxies.map(p => p.pid)
  const down = await runCli(['dev', 'down', '--dir', dir], { timeoutMs: 60_000 })
  t.equal(down.code, 0, down.stderr)
  t.match(down.stdout, /WAN proxy hv-a → b1 \(pid \d+\): /)
  for (const pid of pids) t.notOk(isAlive(pid), `proxy pid ${pid} stopped`)
  // A stopping proxy logs what it carried: site-a's node pulled 2 blocks of 1 MiB from b1
  // (and read them once more for the plan's probe).
  const nodeLink = info.proxies.find(p => p.host === 'nodes-site-a') as ClusterInfo['proxies'][number]
  const last = JSON.parse(fs.readFileSync(nodeLink.logFile, 'utf8').trim().split('\n').filter(l => l.includes('"stopping"')).pop() ?? '{}')
  t.ok(last.bytesUp + last.bytesDown >= 4 * 1024 * 1024, `the copy crossed the nodes' WAN proxy (${last.bytesUp + last.bytesDown} bytes)`)
  t.notOk(fs.existsSync(path.join(dir, 'cluster.json')))
})

t.test('bad WAN options are refused before anything starts', async (t) => {
  const dir = makeTempDir(t, 'devwan-bad')
  for (const args of [['--wan-latency-ms', '-5'], ['--wan-latency-ms', 'soon'], ['--wan-mbps', '10']]) {
    const res = await runCli(['dev', 'up', '--dir', dir, '--detach', ...args])
    t.equal(res.code, 2, `${args.join(' ')}: exit 2`)
    t.match(res.stderr, /ukai: error: /)
  }
  t.notOk(fs.existsSync(path.join(dir, 'cluster.json')), 'nothing was started')
})
