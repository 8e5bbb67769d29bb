// Issue 14 part 6, `ukai top`'s rough edges as an operator meets them (the real CLI and daemons;
// the screen in a real pseudo-terminal, tmux at 80×24):
// - more disks than the panel has rows: "+N more", and j/k scroll to the rest;
// - a disk in two sites keeps its BLOCKS PER SITE inside its column (the next columns stay put);
// - run on a host that is no agent, round trips still show (from the first running agent);
// - `top --once` (80 columns of text) and `top --json` for scripts;
// - a finished relocation shows 100%, not the percentage of its last progress update.
import { execFile, spawnSync } from 'node:child_process'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t from 'tap'
import { MetaStore } from '../src/meta/store'
import { RelocationRecord } from '../src/meta/schema'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { makeTempDir, startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { processZkAuth } from '../src/dev/process-zk-auth'

const exec = promisify(execFile)
const MiB = 1024 * 1024
const noTmux = spawnSync('tmux', ['-V']).status === 0 ? null : 'tmux is not installed'
const DISKS = Array.from({ length: 10 }, (_, i) => `d${String(i + 1).padStart(2, '0')}`)

interface TopJson {
  from: string | null
  nodes: Array<{ id: string, rttMs: number | null }>
  disks: Array<{ name: string, blocksPerSite: Record<string, number> }>
  relocations: Array<{ disk: string, state: string, percent: number, etaSec: number | null }>
}

t.test('ukai top: the rough edges', async (t) => {
  t.not(os.hostname(), 'hv-a', 'this host is no agent of the test cluster')
  const c = await startCluster(t, { sites: 2, nodesPerSite: 1 })
  const zk = c.zk.connectString
  for (const d of DISKS) t.equal((await runCli(['disk', 'create', d, '--size', '4M', '--block-size', '1M', '--site', 'site-a', '--replicas', '1'], { zk })).code, 0)
  // 64 blocks on a1 and b1: "site-a:64 site-b:64 of 64" is wider than the column.
  t.equal((await runCli(['disk', 'create', 'both', '--size', '64M', '--block-size', '1M', '--nodes', 'a1,b1'], { zk })).code, 0)
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  t.teardown(() => meta.close())
  const now = Date.now()
  const done: RelocationRecord = {
    v: 1, id: 'r-done', disk: 'd01', targetNodes: ['a1'], addedNodes: [], dropNodes: [], rateBytesPerSec: 0,
    state: 'done', reason: '', executor: '',
    plan: { blocks: 4, writtenBlocks: 40, bytes: 40 * MiB },
    progress: { blocks: 30, bytes: 30 * MiB, updatedAtMs: now - 1000 },   // its last update said 75 %
    createdAtMs: now - 10_000, finishedAtMs: now
  }
  await meta.createRelocation(done)

  const once = async (): Promise<string> => {
    const r = await runCli(['top', '--once'], { zk })
    t.equal(r.code, 0, r.stderr)
    return r.stdout
  }
  // The agents publish round trips every couple of seconds.
  let text = ''
  for (let i = 0; i < 50 && !/a1\s+alive.*rtt \d+\.\d+ ms/.test(text); i++) { text = await once(); await sleep(200) }
  t.comment(text)

  t.test('top --once: a text frame for scripts', async (t) => {
    const lines = text.split('\n')
    t.ok(lines.every(l => l.length <= 80), `no line wider than 80 columns (${Math.max(...lines.map(l => l.length))})`)
    t.match(lines[0], /RTT from hv-a/, 'round trips from the first running agent on a host that is none')
    t.match(text, /a1\s+alive.*rtt \d+\.\d+ ms/, 'with the round trips themselves')
    for (const d of DISKS) t.match(text, new RegExp(`^${d}\\s+4\\.00 MiB`, 'm'), `every disk listed (${d})`)
    const header = lines.find(l => l.startsWith('NAME')) ?? ''
    const both = lines.find(l => l.startsWith('both')) ?? ''
    t.match(both, /^both\s+64\.0 MiB\s+0 B\s+site-a:64 site-b:64\s+-\s+0\/0/, 'the two-site disk')
    t.equal(both.indexOf('0/0'), header.indexOf('STALE/LOW'), 'its STALE/LOW stays under its header (the column did not overflow)')
    t.match(text, /d01\s+→ a1\s+done\s+\[#{20}\]\s+100%/, 'a done relocation at 100 %')
    t.notMatch(text, /75%/, 'not at its last update\'s 75 %')
  })

  t.test('top --json', async (t) => {
    const r = await runCli(['top', '--json'], { zk })
    t.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout) as TopJson
    t.equal(j.from, 'hv-a')
    t.same(j.disks.map(d => d.name), ['both', ...DISKS])
    t.same(j.disks[0].blocksPerSite, { 'site-a': 64, 'site-b': 64 })
    t.match(j.relocations, [{ disk: 'd01', state: 'done', percent: 100, etaSec: null }])
    t.ok(j.nodes.every(n => typeof n.rttMs === 'number'), 'round trips to every node')
  })

  t.test('at 80×24: +N more, and scrolling', { skip: noTmux ?? false }, async (t) => {
    const dir = makeTempDir(t, 'top')
    const sock = path.join(dir, 'tmux.sock')
    const tmux = async (...args: string[]): Promise<string> => (await exec('tmux', ['-S', sock, ...args])).stdout
    const cmd = `UKAI_ZK=${zk} TERM=xterm-256color ${process.execPath} ${cliMainPath()} top; echo "top exited with $?"; sleep 120`
    await exec('tmux', ['-S', sock, 'new-session', '-d', '-s', 'top', '-x', '80', '-y', '24', cmd], { env: daemonEnv() })
    t.teardown(async () => { await exec('tmux', ['-S', sock, 'kill-server']).catch(() => {}) })
    const waitFor = async (re: RegExp, what: string): Promise<string> => {
      let s = ''
      for (let i = 0; i < 100; i++) {
        s = await tmux('capture-pane', '-p', '-t', 'top')
        if (re.test(s)) return s
        await sleep(100)
      }
      t.comment(`screen:\n${s}`)
      t.fail(`timed out waiting for ${what}`)
      return s
    }
    let s = await waitFor(/\+\d+ more/, '"+N more" in the disks panel')
    t.comment(`screen:\n${s}`)
    t.ok(s.split('\n').every(l => l.length <= 80), 'no line wider than 80 columns')
    t.match(s, /d01\s+→ a1\s+done/, 'the relocations panel still shows')
    t.notMatch(s, /^│?d10 /m, 'the last disk is below the fold')
    for (let i = 0; i < 5; i++) await tmux('send-keys', '-t', 'top', 'j')
    s = await waitFor(/d10\s+4\.00 MiB/, 'd10 after scrolling down')
    t.match(s, /\d+ above/, 'and it says how many rows are above')
    await tmux('send-keys', '-t', 'top', 'q')
    await waitFor(/top exited with 0/, 'top to exit on q')
  })
})
