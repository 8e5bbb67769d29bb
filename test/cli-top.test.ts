// `ukai top` in a real pseudo-terminal (tmux, 100×30): it shows the sites, the disk and a running
// relocation with its percentage, follows a progress update through its ZooKeeper watch, and
// quits on `q`.
import { execFile, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import type { RelocationRecord } from '../src/meta/schema'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { makeTempDir, startCluster } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { processZkAuth } from '../src/dev/process-zk-auth'

const exec = promisify(execFile)
const MiB = 1024 * 1024
const noTmux = spawnSync('tmux', ['-V']).status === 0 ? null : 'tmux is not installed'

t.test('ukai top in a terminal', { skip: noTmux ?? false }, async (t) => {
  // No controller: it would run the made-up relocation record below (nobody holds vm01's lease).
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2, agentArgs: ['--no-controller'] })
  const zk = c.zk.connectString
  const res = await runCli(['disk', 'create', 'vm01', '--size', '64M', '--block-size', '1M', '--site', 'site-a'], { zk })
  t.equal(res.code, 0, res.stderr)
  t.equal((await runCli(['disk', 'create', 'vm02', '--size', '16M', '--block-size', '1M', '--site', 'site-a'], { zk })).code, 0)
  const disk = await cliJson<{ uuid: string }>(['disk', 'info', 'vm01'], zk)

  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  const now = Date.now()
  const rec: RelocationRecord = {
    v: 1, id: 'r1', disk: 'vm01', targetNodes: ['b1', 'b2'], addedNodes: ['b1', 'b2'], dropNodes: ['a1', 'a2'], rateBytesPerSec: 0,
    state: 'copying', reason: '', executor: 'hv-a',
    plan: { blocks: 64, writtenBlocks: 40, bytes: 40 * MiB },
    progress: { blocks: 10, bytes: 10 * MiB, updatedAtMs: now },
    createdAtMs: now - 5000, finishedAtMs: 0
  }
  await meta.createRelocation(rec)
  t.ok(disk.uuid !== undefined)

  const dir = makeTempDir(t, 'top')
  const sock = path.join(dir, 'tmux.sock')
  const tmux = async (...args: string[]): Promise<string> => (await exec('tmux', ['-S', sock, ...args])).stdout
  const env = daemonEnv()
  const errFile = path.join(dir, 'top.stderr')
  const cmd = `UKAI_ZK=${zk} TERM=xterm-256color ${process.execPath} ${cliMainPath()} top --from hv-a 2>${errFile}; echo "top exited with $?"; sleep 120`
  await exec('tmux', ['-S', sock, 'new-session', '-d', '-s', 'top', '-x', '100', '-y', '30', cmd], { env })
  t.teardown(async () => { await exec('tmux', ['-S', sock, 'kill-server']).catch(() => {}) })

  const screen = async (): Promise<string> => await tmux('capture-pane', '-p', '-t', 'top')
  const waitFor = async (re: RegExp, what: string, timeoutMs = 10_000): Promise<string> => {
    let s = ''
    for (let i = 0; i < timeoutMs / 100; i++) {
      s = await screen()
      if (re.test(s)) return s
      await sleep(100)
    }
    t.comment(`screen:\n${s}`)
    t.fail(`timed out waiting for ${what}`)
    return s
  }

  let s = await waitFor(/25%/, 'the relocation at 25 %')
  t.comment(`screen:\n${s}`)
  t.match(s, /site-a\s+nodes 2\/2/, 'site-a with its two live nodes')
  t.match(s, /site-b\s+nodes 2\/2/, 'site-b with its two live nodes')
  t.match(s, /\ba1\s+alive/, 'node a1 is listed alive')
  t.match(s, /vm01\s+64\.0 MiB\s+(-|[\d.]+ [KMGT]?i?B)\s+site-a:64 of 64/, 'the disk with its size, written bytes and blocks per site')
  t.match(s, /vm01\s+→ b1,b2\s+copying\s+\[#####-+\]\s+25%\s+ETA 0:15/, 'the relocation with a progress bar and an ETA')
  s = await waitFor(/a1\s+alive.*rtt \d+\.\d+ ms/, 'round trips from hv-a')
  t.pass('round trips from hv-a are shown')

  // Writes through hv-a's mount show as written bytes and an I/O rate (from the agent's report).
  // (Not to vm01: its relocation record is made up, and a real lease holder would run it.)
  const writer = (async () => {
    const fh = await fs.promises.open(path.join(c.agent('site-a').mountPoint, 'vm02'), 'r+')
    try {
      for (let i = 0; i < 40; i++) { await fh.write(Buffer.alloc(MiB, i + 1), 0, MiB, (i % 8) * MiB); await sleep(100) }
    } finally { await fh.close() }
  })()
  s = await waitFor(/vm02\s+16\.0 MiB\s+\d+(\.\d+)? MiB\s+site-a:16 of 16.*\/[1-9][\d.]* [KM]iB/, 'written bytes and a write rate for vm02', 15_000)
  t.pass('the disk shows written bytes and its write rate')
  await writer

  // A progress update reaches the screen through the watch.
  const cur = await meta.getRelocation('vm01')
  await meta.updateRelocation({ ...rec, progress: { blocks: 30, bytes: 30 * MiB, updatedAtMs: now + 2000 } }, cur!.version)
  s = await waitFor(/75%/, 'the relocation at 75 %')
  // The rate is the average since the relocation started (relocate/progress.ts: the same figure
  // as `relocate status`): 30 MiB in 7 s.
  t.match(s, /75%\s+ETA 0:02/, 'ETA from the average rate')
  t.match(s, /30\.0 MiB of 40\.0 MiB, 4\.49 MB\/s, by hv-a/, 'bytes done and the rate')

  // A node going down shows (its liveness znode goes with its ZooKeeper session).
  await c.node('b2').kill('SIGKILL')
  s = await waitFor(/site-b\s+nodes 1\/2/, 'site-b with one node down (liveness watch; session timeout)', 30_000)
  t.match(s, /b2\s+DOWN/)

  // The smallest terminal an operator has: everything still fits.
  await tmux('resize-window', '-t', 'top', '-x', '80', '-y', '24')
  s = await waitFor(/^.{0,80}\n(.|\n)*75%\s+ETA/, 'a redraw at 80×24')
  const lines = s.split('\n')
  t.ok(lines.every(l => l.length <= 80), 'no line is wider than 80 columns')
  t.match(s, /vm01\s+→ b1,b2\s+copying\s+\[#+-+\]\s+75%\s+ETA 0:02/, 'the relocation line fits in 80 columns')
  t.match(s, /site-a\s+nodes 2\/2/)

  await tmux('send-keys', '-t', 'top', 'q')
  s = await waitFor(/top exited with 0/, 'top to exit on q')
  t.pass('top quit on q with status 0')
  t.equal(fs.readFileSync(errFile, 'utf8'), '', 'top wrote nothing to stderr (no warnings, e.g. piled-up watches)')
})
