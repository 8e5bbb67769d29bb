// Issue 14 part 2: the Prometheus endpoint of every agent and storage node (--metrics-listen),
// scraped over HTTP and parsed as Prometheus does: counters move with real I/O through the FUSE
// mount, histograms have buckets, a relocation shows its progress, /healthz follows the
// ZooKeeper session, and a bad --metrics-listen starts nothing.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { freePort } from '../src/dev/free-port'
import { isMounted, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until as untilTrue } from './helpers/until'

const SESSION = ['--zk-session-timeout-ms', '4000']
const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> => await untilTrue(what, check, timeoutMs, 200)

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Scrape { samples: Sample[], types: Map<string, string> }

// The Prometheus text format (version 0.0.4): '# TYPE name type' lines and 'name{a="b",…} value'.
function parseExposition (text: string): Scrape {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type !== null) { types.set(type[1], type[2]); continue }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3])
    // prom-client writes NaN as 'Nan' (an idle event-loop histogram); Prometheus parses either.
    if (Number.isNaN(value) && !/^nan$/i.test(m[3])) throw new Error(`bad value in: ${line}`)
    samples.push({ name: m[1], labels, value })
  }
  return { samples, types }
}

async function scrape (address: string): Promise<Scrape> {
  const res = await fetch(`http://${address}/metrics`)
  if (res.status !== 200) throw new Error(`GET /metrics: ${res.status}`)
  if (!/^text\/plain; version=0\.0\.4/.test(res.headers.get('content-type') ?? '')) throw new Error(`content type ${res.headers.get('content-type')}`)
  return parseExposition(await res.text())
}

async function health (address: string): Promise<{ status: number, body: string }> {
  const res = await fetch(`http://${address}/healthz`)
  return { status: res.status, body: await res.text() }
}

function value (s: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = s.samples.find(x => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
  return hit?.value
}

t.test('metrics and readiness of agents and storage nodes', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  const ports = { a1: await freePort(), a2: await freePort(), a3: await freePort(), hv: await freePort() }
  const addr = (p: number): string => `127.0.0.1:${p}`
  const metricsArgs = (p: number): string[] => [...SESSION, '--metrics-listen', addr(p)]
  const nodes = await Promise.all((['a1', 'a2', 'a3'] as const).map(async id => await startNode(t, { zk, id, site: 'site-a', extraArgs: metricsArgs(ports[id]) })))
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: metricsArgs(ports.hv) })
  t.match(fs.readFileSync(agent.logFile, 'utf8'), new RegExp(`"metricsAddress":"127\\.0\\.0\\.1:${ports.hv}"`), 'the ready line names the metrics address')
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '16M', '--nodes', 'a1,a2'], { zk: zks })).code, 0)

  t.test('counters and histograms move with I/O through the mount', async (t) => {
    const file = path.join(agent.mountPoint, 'vol')
    const written = 4 * 1024 * 1024
    const before = await scrape(addr(ports.hv))
    const fh = await fs.promises.open(file, 'r+')
    try {
      for (let off = 0; off < written; off += 128 * 1024) await fh.write(Buffer.alloc(128 * 1024, 7), 0, 128 * 1024, off)
      await fh.sync()
      const back = Buffer.alloc(written)
      await fh.read(back, 0, written, 0)
    } finally {
      await fh.close()
    }
    const s = await scrape(addr(ports.hv))
    const vol = { disk: 'vol' }
    t.ok((value(s, 'ukai_disk_write_bytes_total', vol) ?? 0) - (value(before, 'ukai_disk_write_bytes_total', vol) ?? 0) >= written, 'write bytes grew by at least what was written')
    t.ok((value(s, 'ukai_disk_read_bytes_total', vol) ?? 0) >= written, 'read bytes counted')
    t.ok((value(s, 'ukai_disk_write_ops_total', vol) ?? 0) >= 1 && (value(s, 'ukai_disk_read_ops_total', vol) ?? 0) >= 1, 'ops counted')
    t.ok((value(s, 'ukai_disk_flushes_total', vol) ?? 0) >= 1, 'the fsync counted')
    t.ok((value(s, 'ukai_disk_lease_acquisitions_total', vol) ?? 0) >= 1, 'the lease acquisition counted')
    const shortCircuit = value(s, 'ukai_disk_read_short_circuit_bytes_total', vol) ?? 0
    const remote = value(s, 'ukai_disk_read_remote_bytes_total', vol) ?? 0
    t.ok(shortCircuit + remote >= written, `reads split into short-circuit (${shortCircuit}) and remote (${remote}) bytes`)
    t.equal(s.types.get('ukai_disk_write_latency_seconds'), 'histogram')
    const buckets = s.samples.filter(x => x.name === 'ukai_disk_write_latency_seconds_bucket' && x.labels.disk === 'vol')
    t.ok(buckets.length >= 10, 'the latency histogram has buckets')
    t.equal(buckets[buckets.length - 1].labels.le, '+Inf')
    t.ok(buckets.every((b, i) => i === 0 || b.value >= buckets[i - 1].value), 'buckets are cumulative')
    t.equal(buckets[buckets.length - 1].value, value(s, 'ukai_disk_write_latency_seconds_count', vol), '+Inf bucket = count')
    t.equal(value(s, 'ukai_disk_write_latency_seconds_count', vol), value(s, 'ukai_disk_write_ops_total', vol), 'one observation per write')
    t.ok((value(s, 'ukai_disk_write_latency_seconds_sum', vol) ?? 0) > 0, 'latency sum')
    t.equal(value(s, 'ukai_zookeeper_session_connected'), 1)
    t.equal(value(s, 'ukai_daemon_ready', { daemon: 'mount' }), 1)
    t.ok(value(s, 'process_cpu_user_seconds_total') !== undefined && value(s, 'nodejs_heap_size_used_bytes') !== undefined, 'process metrics')
    t.equal(s.samples.find(x => x.name === 'ukai_disk_read_ops_total')?.labels.host, 'hv-a', 'series carry the host')
    for (const name of s.types.keys()) if (name.startsWith('ukai_') && s.types.get(name) === 'counter') t.match(name, /_total$/, `counter ${name} ends in _total`)

    const n = await scrape(addr(ports.a1))
    t.ok((value(n, 'ukai_node_write_bytes_total') ?? 0) >= written, 'node write bytes')
    t.ok((value(n, 'ukai_node_requests_total', { rpc: 'write' }) ?? 0) >= 1, 'write requests by rpc')
    t.ok((value(n, 'ukai_node_requests_total', { rpc: 'flush' }) ?? 0) >= 1, 'flush requests by rpc')
    t.ok((value(n, 'ukai_node_request_latency_seconds_count', { rpc: 'write' }) ?? 0) >= 1, 'request latency histogram')
    t.ok(n.samples.some(x => x.name === 'ukai_node_request_latency_seconds_bucket' && x.labels.rpc === 'write' && x.labels.le === '0.001'), 'with buckets')
    t.ok((value(n, 'ukai_node_capacity_bytes') ?? 0) > 0, 'capacity')
    t.ok((value(n, 'ukai_node_used_bytes') ?? 0) >= written, 'used bytes')
    t.ok((value(n, 'ukai_node_block_versions') ?? 0) >= 1, 'block versions')
    t.ok((value(n, 'ukai_node_fsyncs_total') ?? 0) >= 1, 'fsyncs')
    t.equal(value(n, 'ukai_zookeeper_session_connected'), 1)
    t.equal(n.samples.find(x => x.name === 'ukai_node_used_bytes')?.labels.node, 'a1', 'series carry the node id')
    t.ok(value(n, 'process_resident_memory_bytes') !== undefined, 'process metrics')
  })

  t.test('a relocation shows its progress on the agent running it', async (t) => {
    // The lease holder runs a relocation: hold the disk open and written on this agent.
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
    t.teardown(async () => await fh.close())
    await fh.write(Buffer.alloc(4096, 1), 0, 4096, 0)
    const started = await runCli(['relocate', 'vol', '--nodes', 'a2,a3', '--rate', '1', '--no-probe'], { zk: zks })
    t.equal(started.code, 0, started.stderr)
    await until('relocation progress on the agent', async () => {
      const s = await scrape(addr(ports.hv))
      return (value(s, 'ukai_relocation_planned_bytes', { disk: 'vol' }) ?? 0) > 0 && (value(s, 'ukai_relocation_progress_bytes', { disk: 'vol' }) ?? 0) > 0
    })
    const s = await scrape(addr(ports.hv))
    t.ok((value(s, 'ukai_relocation_rate_bytes_per_second', { disk: 'vol' }) ?? -1) >= 0, 'a rate')
    await runCli(['relocate', 'cancel', 'vol'], { zk: zks })
  })

  t.test('a bad --metrics-listen is refused before anything starts', async (t) => {
    const dir = fs.mkdtempSync(path.join(agent.dir, 'bad-'))
    const mnt = path.join(dir, 'mnt')
    fs.mkdirSync(mnt)
    const cases: Array<{ args: string[], message: RegExp }> = [
      { args: ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen', 'nope'], message: /bad --metrics-listen 'nope': expected HOST:PORT/ },
      { args: ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen', '0.0.0.0:9100'], message: /--metrics-listen '0\.0\.0\.0:9100' is not a loopback address.*--metrics-listen-any/ },
      { args: ['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen-any'], message: /--metrics-listen-any needs --metrics-listen/ },
      { args: ['mount', mnt, '--site', 'site-a', '--host', 'hv-bad', '--metrics-listen', 'example.org:9100'], message: /bad --metrics-listen 'example\.org:9100': HOST must be an IP address or localhost/ },
      { args: ['mount', mnt, '--site', 'site-a', '--host', 'hv-bad', '--metrics-listen', '10.1.2.3:9100'], message: /not a loopback address/ }
    ]
    for (const c of cases) {
      const r = await runCli(c.args, { zk: zks })
      t.equal(r.code, 2, `exit 2: ukai ${c.args.join(' ')}`)
      t.match(r.stderr, c.message)
    }
    const taken = await runCli(['storagenode', '--id', 'n9', '--site', 'site-a', '--data-dir', dir, '--listen', '127.0.0.1:0', '--metrics-listen', addr(ports.a1)], { zk: zks })
    t.equal(taken.code, 1, 'a metrics port in use fails the start')
    t.match(taken.stderr, new RegExp(`cannot serve metrics on 127\\.0\\.0\\.1:${ports.a1}: .*EADDRINUSE`))
    t.notOk(isMounted(mnt), 'nothing mounted')
    const nodes = await cliJson<Array<{ id: string }>>(['node', 'list'], zks)
    t.notOk(nodes.some(x => x.id === 'n9'), 'no node registered')
    t.same(fs.readdirSync(dir).filter(f => f !== 'mnt'), [], 'nothing written to the data dir')
  })

  t.test('a replica lost under a writer is counted as a stale mark', async (t) => {
    const before = value(await scrape(addr(ports.hv)), 'ukai_disk_stale_marks_total', { disk: 'vol' }) ?? 0
    // a2 holds a replica of vol whatever became of the relocation (it is in both replica sets).
    const a2 = nodes.find(n => n.id === 'a2')
    await a2?.kill('SIGKILL')
    const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
    try {
      await fh.write(Buffer.alloc(4096, 9), 0, 4096, 8192)
      await fh.sync()
    } finally {
      await fh.close()
    }
    const s = await scrape(addr(ports.hv))
    t.ok((value(s, 'ukai_disk_stale_marks_total', { disk: 'vol' }) ?? 0) > before, 'the stale mark counted')
  })

  t.test('/healthz follows the ZooKeeper session', async (t) => {
    for (const p of [ports.hv, ports.a1]) {
      const h = await health(addr(p))
      t.equal(h.status, 200, `ready on ${p}`)
      t.equal(h.body, 'ok\n')
    }
    t.equal((await fetch(`http://${addr(ports.hv)}/nothing`)).status, 404)
    await zk.kill('SIGKILL')
    for (const p of [ports.hv, ports.a1]) {
      await until(`503 on ${p} without ZooKeeper`, async () => (await health(addr(p))).status === 503)
      t.match((await health(addr(p))).body, /not ready: the ZooKeeper session is not connected/)
      t.equal(value(await scrape(addr(p)), 'ukai_zookeeper_session_connected'), 0, 'the session gauge says so too')
    }
    await zk.restart()
    for (const p of [ports.hv, ports.a1]) await until(`200 on ${p} with ZooKeeper back`, async () => (await health(addr(p))).status === 200)
    t.pass('ready again')
  })
})
