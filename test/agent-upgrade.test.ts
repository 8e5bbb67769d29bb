// Issue 14 part 3, the upgrade procedure of docs/operations.md ("Upgrading"), tested as an operator
// runs it: the agent restarted in place (SIGTERM, then the new binary) while QEMU writes a disk
// over the agent's NBD socket with `reconnect-delay`. What the writer sees is a pause, not an
// error: QEMU's NBD client reconnects to the new agent's socket and resends what was in flight;
// the copy finishes with exit 0 and every byte is there (checked through the new mount).
// (On the FUSE file the same restart fails the open descriptors: test/agent-crash.test.ts; the
// procedure for those is a live migration away first.)
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { fuseUnavailable, makeTempDir, missingCli } from './helpers/cluster'
import { qemuUnavailable, startNbdCluster, waitForSocket } from './helpers/nbd'

const MiB = 1024 * 1024
const COPY_BYTES = 48 * MiB
const RATE = '8M' // qemu-img's rate limit: ~6 s of writes, so the restart lands in the middle

const skip = missingCli('mount') ?? fuseUnavailable() ?? qemuUnavailable()

t.test('restarting the agent under QEMU writes over NBD: a pause, no error, nothing lost', { skip: skip ?? false }, async (t) => {
  const c = await startNbdCluster(t)
  const created = await runCli(['disk', 'create', 'vm', '--size', '64M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,a2'], { zk: c.zk.connectString })
  t.equal(created.code, 0, created.stderr)
  const sock = c.socket('vm')
  await waitForSocket(sock)
  const tmp = makeTempDir(t, 'upgrade')
  const src = path.join(tmp, 'src.raw')
  const data = randomBytes(rng(41), COPY_BYTES)
  fs.writeFileSync(src, data)

  const target = `driver=nbd,server.type=unix,server.path=${sock},export=vm,reconnect-delay=30`
  const startedMs = Date.now()
  const copy = spawn('qemu-img', ['convert', '-n', '-r', RATE, '-f', 'raw', '--target-image-opts', src, target], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (copy.exitCode === null) copy.kill('SIGKILL') })
  let stderr = ''
  copy.stderr.on('data', (b: Buffer) => { stderr += b.toString() })
  const exited = new Promise<number | null>(resolve => copy.on('exit', code => resolve(code)))

  await new Promise(resolve => setTimeout(resolve, 2000))
  t.equal(copy.exitCode, null, 'the copy is still running when the agent restarts')
  const restartMs = Date.now()
  await c.agent.restart()
  const restartedMs = Date.now()
  t.comment(`agent restarted in ${restartedMs - restartMs} ms`)

  const code = await exited
  const totalMs = Date.now() - startedMs
  t.equal(code, 0, `qemu-img convert finished without an error (${stderr.trim() || 'no stderr'})`)
  t.notMatch(stderr, /error|failed/i, 'QEMU reported no I/O error')
  t.comment(`copy took ${totalMs} ms at ${RATE}/s (~${Math.round(COPY_BYTES / (8 * MiB) * 1000)} ms unpaused)`)

  const file = path.join(c.agent.mountPoint, 'vm')
  const back = Buffer.alloc(COPY_BYTES)
  const fh = await fs.promises.open(file, 'r')
  try { await fh.read(back, 0, COPY_BYTES, 0) } finally { await fh.close() }
  t.equal(sha256(back), sha256(data), 'every byte written across the restart is on the disk')
})
