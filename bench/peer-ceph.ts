// Ceph RBD replica 2 as a bench target: one monitor and two bluestore OSDs on files, all under the
// bench's work dir, bound to 127.0.0.1 (msgr2 only), our children, stopped by PID. A CRUSH rule
// with failure domain osd (both OSDs are on this one host), a pool of size 2 / min_size 1 on it,
// one RBD image (layering only, no exclusive lock, so fio's jobs can write it together), reached
// with fio's rbd engine (librbd), one request in flight per job as psync has.
//
// No ceph-mgr: RBD I/O does not need one (it reports PG statistics and runs modules), and Debian's
// ceph-mgr pulls in ~100 Python packages. cephx is off: the cluster lives and dies with the run.
// The OSDs' memory target is Ceph's minimum (896 MiB) with a fixed 256 MiB cache: this machine
// runs two of them beside everything else.
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { freePort } from '../src/dev/free-port'
import { spawnLogged, stopLogged, type LoggedProcess } from '../src/dev/processes'
import { isAlive } from '../src/dev/pids'
import type { BenchSettings } from './jobs'
import type { Cleanup } from './cleanup'
import type { TargetRun } from './report'
import { peakRssBytes } from './proc-stats'
import { runWorkloads, type Progress, type TargetExtras } from './target-run'

const exec = promisify(execFile)
const POOL = 'rbd'
const IMAGE = 'bench'
const GIB = 1024 * 1024 * 1024

export async function benchCeph (dir: string, settings: BenchSettings, progress: Progress, run: TargetRun, cleanup: Cleanup, extras: TargetExtras): Promise<void> {
  process.stdout.write('            starting a Ceph monitor and 2 bluestore OSDs (replica 2, failure domain osd) …\n')
  const c = new CephCluster(dir)
  cleanup.add('stop Ceph', () => c.stop())
  try {
    await c.start(settings.fileSizeBytes)
    const pids = c.pids()
    await runWorkloads('ceph', `rbd:${POOL}/${IMAGE}`, settings, pids, progress, run,
      { kind: 'rbd', pool: POOL, image: IMAGE, clientName: 'admin', env: { CEPH_CONF: c.conf } })
    for (const [name, pid] of Object.entries(pids)) extras.memory[`ceph ${name}`] = peakRssBytes(pid)
  } finally {
    await c.stop()
  }
}

class CephCluster {
  readonly conf: string
  private readonly procs: Array<{ name: string, proc: LoggedProcess }> = []
  private stopped: Promise<void> | undefined

  constructor (private readonly dir: string) {
    this.conf = path.join(dir, 'ceph.conf')
  }

  private async ceph (tool: 'ceph' | 'rbd', ...args: string[]): Promise<string> {
    try {
      return (await exec(tool, ['--conf', this.conf, ...args], { timeout: 120_000 })).stdout.trim()
    } catch (err) {
      const e = err as { stderr?: string, message: string }
      throw new Error(`${tool} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`)
    }
  }

  private spawn (name: string, argv: string[]): void {
    this.procs.push({ name, proc: spawnLogged({ argv, logFile: path.join(this.dir, 'log', `${name}.out`) }) })
  }

  async start (imageBytes: number): Promise<void> {
    const d = this.dir
    for (const sub of ['mon', 'osd0', 'osd1', 'run', 'log']) fs.mkdirSync(path.join(d, sub), { recursive: true })
    const fsid = crypto.randomUUID()
    const port = await freePort()
    // Each OSD holds a whole replica: room for the image twice over (the block files are sparse).
    const blockBytes = Math.max(4 * GIB, 2 * imageBytes)
    fs.writeFileSync(this.conf, [
      '[global]',
      `fsid = ${fsid}`,
      `mon host = v2:127.0.0.1:${port}`,
      'public network = 127.0.0.0/8',
      'ms bind msgr1 = false',
      'ms bind ipv6 = false',
      'auth cluster required = none',
      'auth service required = none',
      'auth client required = none',
      `run dir = ${d}/run`,
      `admin socket = ${d}/run/$name.asok`,
      `log file = ${d}/log/$name.log`,
      `keyring = ${d}/keyring`,
      'osd pool default size = 2',
      'osd pool default min size = 1',
      'osd pool default pg autoscale mode = off',
      'mon allow pool delete = true',
      'mon data avail warn = 1',
      'mon data avail crit = 0',
      '[mon]',
      `mon data = ${d}/mon`,
      '[osd]',
      `osd data = ${d}/osd$id`,
      'osd objectstore = bluestore',
      'bluestore block create = true',
      `bluestore block size = ${blockBytes}`,
      'osd memory target = 939524096',
      'bluestore cache autotune = false',
      'bluestore cache size = 268435456',
      ''].join('\n'))
    const keyring = path.join(d, 'keyring')
    await exec('ceph-authtool', ['--create-keyring', keyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *'])
    await exec('ceph-authtool', [keyring, '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *'])
    const monmap = path.join(d, 'monmap')
    await exec('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${port}]`, '--fsid', fsid, monmap])
    await exec('ceph-mon', ['--conf', this.conf, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', keyring], { timeout: 60_000 })
    this.spawn('mon.a', ['ceph-mon', '--conf', this.conf, '-f', '-i', 'a'])
    await this.waitFor('the monitor', async () => { try { await this.ceph('ceph', '--connect-timeout', '5', 'mon', 'stat'); return true } catch { return false } })
    for (let i = 0; i < 2; i++) {
      const uuid = crypto.randomUUID()
      const id = await this.ceph('ceph', 'osd', 'new', uuid)
      if (id !== String(i)) throw new Error(`ceph osd new gave id ${id}, expected ${i}`)
      await exec('ceph-osd', ['--conf', this.conf, '-i', id, '--mkfs', '--osd-uuid', uuid], { timeout: 180_000 })
      this.spawn(`osd.${id}`, ['ceph-osd', '--conf', this.conf, '-f', '-i', id])
    }
    await this.waitFor('2 OSDs up', async () => /"num_up_osds":2\b/.test(await this.ceph('ceph', 'osd', 'stat', '--format=json').catch(() => '')), 120_000)
    await this.ceph('ceph', 'osd', 'crush', 'rule', 'create-replicated', 'by-osd', 'default', 'osd')
    await this.ceph('ceph', 'osd', 'pool', 'create', POOL, '32', '32', 'replicated', 'by-osd')
    await this.ceph('ceph', 'osd', 'pool', 'set', POOL, 'size', '2', '--yes-i-really-mean-it')
    await this.ceph('ceph', 'osd', 'pool', 'set', POOL, 'min_size', '1')
    await this.ceph('ceph', 'osd', 'pool', 'application', 'enable', POOL, 'rbd')
    await this.ceph('rbd', 'create', '--size', `${Math.ceil(imageBytes / (1024 * 1024))}M`, '--image-feature', 'layering', `${POOL}/${IMAGE}`)
  }

  pids (): Record<string, number> {
    return Object.fromEntries(this.procs.map(p => [p.name, p.proc.pid]))
  }

  // OSDs first, the monitor last; each by its PID, checked against the argv we started it with.
  stop (): Promise<void> {
    this.stopped ??= (async () => {
      for (const p of [...this.procs].reverse()) await stopLogged(p.proc, { termTimeoutMs: 20_000 }).catch(() => {})
    })()
    return this.stopped
  }

  private async waitFor (what: string, cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!await cond()) {
      const dead = this.procs.find(p => !isAlive(p.proc.pid))
      if (dead !== undefined) throw new Error(`ceph ${dead.name} exited (${dead.proc.exitReason() ?? 'gone'}) while waiting for ${what}; log: ${path.join(this.dir, 'log')}`)
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  }
}
