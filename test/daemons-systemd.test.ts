// Issue 14 part 3: both daemons fit a `Type=notify` unit. With NOTIFY_SOCKET set (here a datagram
// socket of the test's, standing in for systemd), a storage node says READY=1 only once it
// serves and is registered, an agent only once its FUSE mount exists, and each says STOPPING=1
// when SIGTERM starts its drain. Without NOTIFY_SOCKET nothing is sent (every other test). The
// shipped units are checked with `systemd-analyze verify` and must say Type=notify.
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import t from 'tap'
import { isMounted } from '../src/lib/mounts'
import { TestLike, fuseUnavailable, makeTempDir, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson } from './helpers/cli'
import { until } from './helpers/until'

const REPO = path.resolve(__dirname, '..')

// The messages received so far, one string per datagram (fields joined by '|').
async function notifyListener (t: TestLike, dir: string): Promise<{ socket: string, messages: string[] }> {
  const socket = path.join(dir, 'notify.sock')
  const child = spawn('python3', [path.join(__dirname, 'helpers', 'notify-listener.py'), socket], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const messages: string[] = []
  const lines = readline.createInterface({ input: child.stdout })
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject)
    lines.on('line', (line) => { if (line === 'listening') resolve(); else messages.push(line) })
  })
  return { socket, messages }
}

t.test('storage node and agent notify systemd: READY once serving, STOPPING on SIGTERM', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const dir = makeTempDir(t, 'notify')
  const { socket, messages } = await notifyListener(t, dir)
  const before = process.env.NOTIFY_SOCKET
  process.env.NOTIFY_SOCKET = socket // daemons inherit the test's environment
  t.teardown(() => { if (before === undefined) delete process.env.NOTIFY_SOCKET; else process.env.NOTIFY_SOCKET = before })

  const node = await startNode(t, { zk, id: 'a1', site: 'site-a' })
  await until('the node to notify READY', async () => messages.some(m => m.includes('READY=1')), 10_000, 50)
  // READY was sent after registration: the node is listed alive the moment it is seen.
  const nodes = await cliJson<Array<{ id: string, state?: string, alive?: unknown }>>(['node', 'list'], zk.connectString)
  t.ok(nodes.some(n => n.id === 'a1'), 'the node is registered when READY arrives')
  t.match(messages.find(m => m.includes('READY=1')), /STATUS=serving/, 'with a status line')

  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a' })
  await until('the agent to notify READY', async () => messages.filter(m => m.includes('READY=1')).length === 2, 10_000, 50)
  t.ok(isMounted(agent.mountPoint), 'the mount exists when the agent says READY')

  const readyCount = messages.length
  await agent.stop()
  await until('the agent to notify STOPPING', async () => messages.slice(readyCount).some(m => m.includes('STOPPING=1')), 10_000, 50)
  await node.stop()
  await until('the node to notify STOPPING', async () => messages.slice(readyCount).filter(m => m.includes('STOPPING=1')).length === 2, 10_000, 50)
  t.equal(messages.filter(m => m.includes('READY=1')).length, 2, 'READY once per daemon')
})

t.test('the shipped units are notify units that systemd-analyze accepts', async (t) => {
  const units = path.join(REPO, 'libvirt', 'systemd')
  for (const unit of ['ukai-mount.service', 'ukai-storagenode@.service', 'ukai-controller.service']) {
    const text = fs.readFileSync(path.join(units, unit), 'utf8')
    t.match(text, /^Type=notify$/m, `${unit}: Type=notify`)
    t.match(text, /^NotifyAccess=main$/m, `${unit}: only the daemon itself may notify`)
    t.match(text, /^NoNewPrivileges=yes$/m, `${unit}: hardened`)
  }
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) return t.comment('no systemd-analyze here')
  // verify wants the ExecStart binary to exist: point the units at this checkout's bin/ukai.
  const dir = makeTempDir(t, 'units')
  for (const unit of fs.readdirSync(units).filter(f => f.endsWith('.service'))) {
    const text = fs.readFileSync(path.join(units, unit), 'utf8').replaceAll('/opt/ukai/bin/ukai', path.join(REPO, 'bin', 'ukai'))
    fs.writeFileSync(path.join(dir, unit.replace('@.service', '@a1.service')), text)
  }
  for (const unit of fs.readdirSync(dir)) {
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(dir, unit)], { encoding: 'utf8' })
    // verify exits 0 even for an unknown key or a bad value ("…:4: Unknown key 'X', ignoring"):
    // every complaint names the file, so none may.
    const about = (r.stderr + r.stdout).split('\n').filter(l => l.includes(unit))
    t.same(about, [], `${unit}: systemd-analyze verify finds nothing wrong`)
  }
  // The exposure systemd itself rates (0 = locked down, 10 = nothing): a node needs its data dir
  // and the network only; the agent must mount in the host's namespace, which caps what it can shed.
  const exposure = (unit: string): number => Number(/Overall exposure level for \S+: ([\d.]+)/.exec(spawnSync('systemd-analyze', ['security', '--offline=yes', path.join(dir, unit)], { encoding: 'utf8' }).stdout)?.[1] ?? NaN)
  t.ok(exposure('ukai-storagenode@a1.service') <= 3, `storage node exposure ${exposure('ukai-storagenode@a1.service')} ≤ 3`)
  t.ok(exposure('ukai-mount.service') <= 7, `agent exposure ${exposure('ukai-mount.service')} ≤ 7`)
  t.ok(exposure('ukai-controller.service') <= 3, `controller exposure ${exposure('ukai-controller.service')} ≤ 3`)
})
