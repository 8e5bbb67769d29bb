// GlusterFS replica 2 as a bench target: glusterd, two bricks and the FUSE client, all under the
// bench's work dir, bound to 127.0.0.1, stopped by PID (their pid files, each checked against its
// command line before it is signalled). Volume: replica 2, the virt profile (`group virt`, what
// oVirt/RHV use for VM images: sharding, strict O_DIRECT, no client caches), shard size 4 MiB.
// fio reaches it through the glusterfs FUSE mount with psync + O_DIRECT, as it reaches UKAI's.
//
// Host name: the gluster CLI refuses `localhost` and literal 127.x addresses for bricks. We use
// this machine's host name when it resolves to a loopback address (Debian's /etc/hosts has
// `127.0.1.1 HOSTNAME`); otherwise an alias line is added to /etc/hosts for the run and removed.
// glusterd itself gets its own working directory, run directory and Unix socket (its .vol file),
// so nothing of it lands in /var/lib/glusterd; brick and self-heal logs and sockets still go to
// /var/log/glusterfs and /var/run/gluster (their paths are fixed in glusterd; the sockets are
// removed at stop). Its management port stays 24007, the default the bricks and the FUSE client
// ask for: a system glusterd must not be running on this machine during the bench.
import { execFile } from 'node:child_process'
import dns from 'node:dns'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { readCmdline, stopProcess } from '../src/dev/pids'
import { isMounted, unmount } from '../src/lib/mounts'
import { spawnLogged, stopLogged, type LoggedProcess } from '../src/dev/processes'
import type { BenchSettings } from './jobs'
import type { Cleanup } from './cleanup'
import type { TargetRun } from './report'
import { peakRssBytes } from './proc-stats'
import { runWorkloads, type Progress, type TargetExtras } from './target-run'

const exec = promisify(execFile)
const VOLUME = 'ukaibench'
const HOSTS_FILE = '/etc/hosts'
const ALIAS = 'ukai-bench-gluster'

export async function benchGluster (dir: string, settings: BenchSettings, progress: Progress, run: TargetRun, cleanup: Cleanup, extras: TargetExtras): Promise<void> {
  process.stdout.write('            starting glusterd, 2 bricks (replica 2, virt profile, 4 MiB shards) and a FUSE mount …\n')
  const g = new GlusterCluster(dir)
  cleanup.add('stop GlusterFS', () => g.stop())
  try {
    await g.start()
    const pids = g.pids()
    await runWorkloads('gluster', path.join(g.mountPoint, 'testfile'), settings, pids, progress, run)
    for (const [name, pid] of Object.entries(pids)) extras.memory[`gluster ${name}`] = peakRssBytes(pid)
  } finally {
    await g.stop()
  }
}

class GlusterCluster {
  readonly mountPoint: string
  private readonly run: string
  private host = ''
  private addedAlias = false
  private glusterd: LoggedProcess | undefined
  private stopped: Promise<void> | undefined

  constructor (private readonly dir: string) {
    this.mountPoint = path.join(dir, 'mnt')
    this.run = path.join(dir, 'run')
  }

  private cli (...args: string[]): Promise<{ stdout: string }> {
    return exec('gluster', [`--glusterd-sock=${path.join(this.run, 'glusterd.socket')}`, '--mode=script', ...args], { timeout: 60_000 })
  }

  async start (): Promise<void> {
    const work = path.join(this.dir, 'glusterd')
    for (const d of [work, this.run, path.join(this.dir, 'log'), path.join(this.dir, 'brick1'), path.join(this.dir, 'brick2'), this.mountPoint]) fs.mkdirSync(d, { recursive: true })
    // The option groups (virt) are read from glusterd's working directory.
    fs.cpSync('/var/lib/glusterd/groups', path.join(work, 'groups'), { recursive: true })
    this.host = await this.loopbackHostName()
    const vol = path.join(this.dir, 'glusterd.vol')
    fs.writeFileSync(vol, [
      'volume management',
      '    type mgmt/glusterd',
      `    option working-directory ${work}`,
      `    option run-directory ${this.run}`,
      `    option glusterd-sockfile ${path.join(this.run, 'glusterd.socket')}`,
      '    option transport-type socket',
      '    option transport.socket.bind-address 127.0.0.1',
      '    option transport.socket.listen-port 24007',
      '    option ping-timeout 0',
      '    option event-threads 1',
      'end-volume', ''].join('\n'))
    // -N: stays in the foreground (our child); it writes its pid file all the same.
    this.glusterd = spawnLogged({ argv: ['glusterd', '-N', '-f', vol, '-p', this.pidFile('glusterd'), '-l', path.join(this.dir, 'log', 'glusterd.log')], logFile: path.join(this.dir, 'log', 'glusterd.out') })
    await this.waitFor('glusterd to answer', async () => { try { await this.cli('peer', 'status'); return true } catch { return false } })
    const bricks = ['brick1', 'brick2'].map(b => `${this.host}:${path.join(this.dir, b)}`)
    // force: the bricks are on the root file system, which gluster warns against.
    await this.cli('volume', 'create', VOLUME, 'replica', '2', ...bricks, 'force')
    await this.cli('volume', 'set', VOLUME, 'group', 'virt')
    await this.cli('volume', 'set', VOLUME, 'features.shard-block-size', '4MB')
    await this.cli('volume', 'start', VOLUME)
    await exec('glusterfs', [`--volfile-server=${this.host}`, `--volfile-id=${VOLUME}`, `--pid-file=${this.pidFile('mount')}`, `--log-file=${path.join(this.dir, 'log', 'mount.log')}`, this.mountPoint], { timeout: 60_000 })
    await this.waitFor('the glusterfs FUSE mount', () => isMounted(this.mountPoint))
  }

  private pidFile (name: string): string { return path.join(this.run, `${name}.pid`) }

  // Every gluster process of ours: glusterd, the bricks, the self-heal daemon, the FUSE client.
  // Found by the pid files below our run directory, and kept only if the process's command line
  // names our directory (a stale pid file must never make us signal someone else's process).
  private ours (): Array<{ name: string, pid: number, argv: string[] }> {
    const found: Array<{ name: string, pid: number, argv: string[] }> = []
    const walk = (d: string): void => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name)
        if (e.isDirectory()) walk(p)
        else if (e.name.endsWith('.pid')) {
          const pid = Number(fs.readFileSync(p, 'utf8').trim())
          const argv = readCmdline(pid)
          if (argv !== null && argv.join(' ').includes(this.dir)) found.push({ name: e.name.replace(/\.pid$/, '').replace(/^.*-(brick\d)$/, '$1'), pid, argv })
        }
      }
    }
    if (fs.existsSync(this.run)) walk(this.run)
    return found
  }

  pids (): Record<string, number> {
    return Object.fromEntries(this.ours().map(p => [p.name, p.pid]))
  }

  stop (): Promise<void> {
    this.stopped ??= (async () => {
      if (isMounted(this.mountPoint)) await unmount(this.mountPoint).catch(() => {})
      // The client first, then the self-heal daemon and the bricks, glusterd last.
      const procs = this.ours().sort((a, b) => rank(a.name) - rank(b.name))
      for (const p of procs) await stopProcess(p.pid, p.argv, { termTimeoutMs: 5_000 }).catch(() => {})
      // The bricks' and the self-heal daemon's sockets (-S, in /var/run/gluster) outlive them.
      for (const p of procs) {
        const i = p.argv.indexOf('-S')
        if (i >= 0 && p.argv[i + 1] !== undefined) fs.rmSync(p.argv[i + 1], { force: true })
      }
      // glusterd is our child: stopped even if it died before writing its pid file.
      if (this.glusterd !== undefined) await stopLogged(this.glusterd, { termTimeoutMs: 5_000 }).catch(() => {})
      if (this.addedAlias) removeHostsLine(hostsLine(ALIAS))
    })()
    return this.stopped
  }

  private async loopbackHostName (): Promise<string> {
    const name = os.hostname()
    try {
      const { address } = await dns.promises.lookup(name, { family: 4 })
      if (address.startsWith('127.')) return name
    } catch {}
    try {
      const { address } = await dns.promises.lookup(ALIAS, { family: 4 })
      if (address === '127.0.0.1') return ALIAS
    } catch {}
    fs.appendFileSync(HOSTS_FILE, hostsLine(ALIAS))
    this.addedAlias = true
    return ALIAS
  }

  private async waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!await cond()) {
      const exit = this.glusterd?.exitReason() ?? null
      if (exit !== null) throw new Error(`glusterd ${exit} while waiting for ${what} (log: ${path.join(this.dir, 'log', 'glusterd.log')})`)
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  }
}

function rank (name: string): number {
  return name === 'mount' ? 0 : name === 'glusterd' ? 3 : name.startsWith('brick') ? 2 : 1
}

function hostsLine (alias: string): string { return `127.0.0.1 ${alias} # added by the UKAI bench (bench/peer-gluster.ts)\n` }

// Rewritten in place (not renamed over): /etc/hosts is often a bind mount in containers.
function removeHostsLine (line: string): void {
  const text = fs.readFileSync(HOSTS_FILE, 'utf8')
  if (text.includes(line)) fs.writeFileSync(HOSTS_FILE, text.replace(line, ''))
}
