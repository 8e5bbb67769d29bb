// src/dev/zookeeper.ts: a private ZooKeeper starts, serves a real client, stops by PID.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import zookeeper from 'node-zookeeper-client'
import { fourLetterWord, startZooKeeper } from '../src/dev/zookeeper'
import { isAlive, readCmdline } from '../src/dev/pids'

const CLIENT_TIMEOUT_MS = 10_000

function connect (connectString: string): Promise<zookeeper.Client> {
  return new Promise((resolve, reject) => {
    const client = zookeeper.createClient(connectString, { sessionTimeout: 5_000, retries: 0 })
    const timer = setTimeout(() => { client.close(); reject(new Error(`no ZooKeeper session after ${CLIENT_TIMEOUT_MS} ms`)) }, CLIENT_TIMEOUT_MS)
    client.once('connected', () => { clearTimeout(timer); resolve(client) })
    client.connect()
  })
}

function create (client: zookeeper.Client, p: string, data: Buffer): Promise<string> {
  return new Promise((resolve, reject) => client.create(p, data, (err, created) => err != null ? reject(err) : resolve(created)))
}

function getData (client: zookeeper.Client, p: string): Promise<Buffer> {
  return new Promise((resolve, reject) => client.getData(p, (err, data) => err != null ? reject(err) : resolve(data)))
}

t.test('startZooKeeper: ruok, create/read a znode, stop by pid', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-zk-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

  const zk = await startZooKeeper({ dir })
  t.teardown(() => zk.stop())

  t.match(zk.connectString, /^127\.0\.0\.1:\d+$/)
  t.ok(isAlive(zk.pid), 'java is running')
  t.same(readCmdline(zk.pid)?.slice(1), zk.argv.slice(1), '/proc/PID/cmdline is what we started')
  t.equal((await fourLetterWord('127.0.0.1', zk.port, 'ruok')).trim(), 'imok')
  t.match(await fourLetterWord('127.0.0.1', zk.port, 'stat'), /Mode: standalone/)
  const cfg = fs.readFileSync(path.join(dir, 'zoo.cfg'), 'utf8')
  t.match(cfg, /clientPortAddress=127\.0\.0\.1/)
  t.match(cfg, /admin\.enableServer=false/)
  t.ok(fs.statSync(zk.logFile).size > 0, 'ZooKeeper logs to its log file')

  const client = await connect(zk.connectString)
  t.teardown(() => client.close())
  const payload = Buffer.from('hello ukai')
  t.equal(await create(client, '/ukai-dev-test', payload), '/ukai-dev-test')
  t.same(await getData(client, '/ukai-dev-test'), payload)
  client.close()

  await zk.stop()
  t.notOk(isAlive(zk.pid), 'pid is gone after stop()')
  await zk.stop() // idempotent
  await t.rejects(fourLetterWord('127.0.0.1', zk.port, 'ruok', 500), 'port is closed')
})

t.test('startZooKeeper: a taken port is refused', async (t) => {
  const first = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-zk-'))
  t.teardown(() => fs.rmSync(first, { recursive: true, force: true }))
  const second = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-zk-'))
  t.teardown(() => fs.rmSync(second, { recursive: true, force: true }))

  const zk = await startZooKeeper({ dir: first })
  t.teardown(() => zk.stop())
  await t.rejects(startZooKeeper({ dir: second, port: zk.port }), { code: 'ZK_UNAVAILABLE', message: /already in use/ })
})

t.test('startZooKeeper: a ZooKeeper that exits fails with ZK_UNAVAILABLE and the log tail', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-zk-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const err = await startZooKeeper({ dir, extraConfig: { tickTime: 'not-a-number' }, startTimeoutMs: 20_000 }).then(() => null, (e: unknown) => e)
  t.match(err, { code: 'ZK_UNAVAILABLE', message: /java exited[\s\S]*last lines of .*zookeeper\.log[\s\S]*tickTime|NumberFormat/ })
})

t.test('a temp dir removed after stop leaves nothing behind', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-zk-'))
  const zk = await startZooKeeper({ dir })
  t.teardown(() => zk.stop())
  await zk.stop()
  fs.rmSync(dir, { recursive: true, force: true })
  t.notOk(fs.existsSync(dir), 'dir cleaned')
  t.notOk(isAlive(zk.pid))
})
