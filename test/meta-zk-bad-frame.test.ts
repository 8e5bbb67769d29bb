// Issue 9, item 1: ZooKeeper 3.5+ answers error codes node-zookeeper-client 1.1.3 does not know
// (SESSION_MOVED -118, NO_WATCHER -121, REQUEST_TIMEOUT -122, ...), and the library threw from its
// socket handler, killing the daemon. A proxy in front of a real ZooKeeper rewrites the err field
// of replies: the call fails with a clear UkaiError, the client (and every daemon) carries on.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { UkaiError } from '../src/errors'
import { ZkClient } from '../src/meta/zk-client'
import { startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { until } from './helpers/until'
import { processZkAuth } from '../src/dev/process-zk-auth'
import { startZkFaultProxy } from './helpers/zk-fault-proxy'

const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }

t.test('a ZkClient answered an unknown error code', async (t) => {
  const zk = await startZk(t)
  const proxy = await startZkFaultProxy(t, zk.connectString)
  const client = new ZkClient({ connectString: proxy.connectString, sessionTimeoutMs: 4000, auth: processZkAuth() })
  t.teardown(() => client.close())
  await client.ready()
  await client.create('/bad-frame', Buffer.from('x'))
  const session = client.sessionId
  const cases: Array<[number, string, string]> = [
    [-118, 'ZK_UNAVAILABLE', 'SESSION_MOVED'],
    [-122, 'ZK_UNAVAILABLE', 'REQUEST_TIMEOUT'],
    [-121, 'INTERNAL', 'NO_WATCHER'],
    [-999, 'INTERNAL', '-999']
  ]
  for (const [code, ukaiCode, words] of cases) {
    proxy.rewriteReplies(1, code)
    const err = await client.get('/bad-frame').then(() => null, (e: unknown) => e)
    t.ok(err instanceof UkaiError, `code ${code}: the call fails with a UkaiError`)
    t.equal((err as UkaiError).code, ukaiCode, `code ${code} → ${ukaiCode}`)
    t.match((err as Error).message, words, `and says what ZooKeeper answered: ${(err as Error).message}`)
    t.equal((await client.get('/bad-frame')).data.toString(), 'x', 'the next call works')
  }
  // A multi carries per-op codes (Transaction.js validates them the same way).
  proxy.rewriteReplies(1, -118)
  const multiErr = await client.multi([{ op: 'check', path: '/bad-frame', version: 0 }]).then(() => null, (e: unknown) => e)
  t.equal((multiErr as UkaiError | null)?.code, 'ZK_UNAVAILABLE', 'a multi fails the same way')
  t.equal(proxy.rewritten, cases.length + 1, 'every rewritten frame reached the client')
  t.equal(client.sessionId, session, 'the session was kept')
  t.ok(client.isConnected, 'still connected')
})

t.test('storage node and mount agent survive bad frames', async (t) => {
  const zk = await startZk(t)
  const proxy = await startZkFaultProxy(t, zk.connectString)
  const SESSION = ['--zk-session-timeout-ms', '4000']
  const nodes = [
    await startNode(t, { zk: proxy.connectString, id: 'n1', site: 's', extraArgs: SESSION }),
    await startNode(t, { zk: proxy.connectString, id: 'n2', site: 's', extraArgs: SESSION })
  ]
  const agent = await startAgent(t, { zk: proxy.connectString, host: 'hv', site: 's', extraArgs: [...SESSION, '--rtt-interval-ms', '300'] })
  t.equal((await runCli(['disk', 'create', 'vol', '--size', '8M', '--site', 's'], { zk: zk.connectString })).code, 0)
  const file = path.join(agent.mountPoint, 'vol')
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  await fh.write(Buffer.alloc(65536, 1), 0, 65536, 0)
  // Every reply to a request for a while carries an unknown code: the agent's round-trip reports
  // (every 300 ms) and the nodes' usage reports (every 5 s) get them.
  for (const code of [-118, -121, -122, -127]) {
    const target = proxy.rewritten + 4
    proxy.rewriteReplies(4, code)
    await until(`the proxy to rewrite 4 replies with ${code}`, async () => proxy.rewritten >= target, 30_000, 100)
  }
  t.ok(proxy.rewritten >= 16, `${proxy.rewritten} bad frames delivered`)
  for (const n of nodes) t.ok(alive(n.pid), `node ${n.id} (pid ${n.pid}) is alive`)
  t.ok(alive(agent.pid), `agent (pid ${agent.pid}) is alive`)
  await fh.write(Buffer.alloc(65536, 2), 0, 65536, 65536)
  await fh.sync()
  const got = Buffer.alloc(131072)
  await fh.read(got, 0, got.length, 0)
  t.ok(got.subarray(0, 65536).every(x => x === 1) && got.subarray(65536).every(x => x === 2), 'I/O goes on, bytes verified')
  const rows = await cliJson<Array<{ id: string, alive: unknown }>>(['node', 'list'], zk.connectString)
  t.ok(rows.every(r => r.alive !== null), 'both nodes still registered alive')
  const info = await cliJson<{ leaseHolder: string | null }>(['disk', 'info', 'vol'], zk.connectString)
  t.equal(info.leaseHolder, 'hv', 'the agent still holds the lease')
})
