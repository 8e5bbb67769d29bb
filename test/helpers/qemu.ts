// Running the test guest (helpers/guest.ts) in QEMU: the serial console is read line by line with
// host timestamps (the gaps between "ok" lines are the guest-visible I/O round time), QMP on a
// unix socket drives migration. KVM is used only where it really boots the guest; otherwise TCG.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { GUEST_CACHE_DIR, type GuestImage } from './guest'

const QEMU = 'qemu-system-x86_64'
const QMP_TIMEOUT_MS = 30_000
const BOOT_TIMEOUT_MS = 60_000
const KVM_PROBE_MS = 15_000
// Kernel arguments that shorten a TCG boot (the guest has no network, no crypto users, one CPU).
const GUEST_KERNEL_ARGS = process.env.UKAI_GUEST_KERNEL_ARGS ?? ''

// ---- QMP -----------------------------------------------------------------------------------

export class Qmp {
  private readonly sock: net.Socket
  private buf = ''
  private waiting: Array<{ resolve: (v: any) => void, reject: (e: Error) => void, what: string }> = []
  readonly events: Array<{ event: string, data?: unknown, atMs: number }> = []

  private constructor (sock: net.Socket) {
    this.sock = sock
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => {
      this.buf += d
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl).trim()
        this.buf = this.buf.slice(nl + 1)
        if (line === '') continue
        const msg = JSON.parse(line)
        if (msg.event !== undefined) { this.events.push({ event: msg.event, data: msg.data, atMs: Date.now() }); continue }
        const w = this.waiting.shift()
        if (w === undefined) continue
        if (msg.error !== undefined) w.reject(new Error(`QMP ${w.what}: ${msg.error.class}: ${msg.error.desc}`))
        else w.resolve(msg.return ?? msg.QMP)
      }
    })
    const fail = (err: Error): void => { for (const w of this.waiting.splice(0)) w.reject(err) }
    sock.on('error', fail)
    sock.on('close', () => fail(new Error('QMP connection closed')))
  }

  static async connect (socketPath: string, timeoutMs = QMP_TIMEOUT_MS): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(socketPath, () => resolve(s))
          s.once('error', reject)
        })
        const qmp = new Qmp(sock)
        await qmp.next('greeting')
        await qmp.execute('qmp_capabilities')
        return qmp
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`QMP at ${socketPath}: ${(err as Error).message}`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    }
  }

  private next (what: string): Promise<any> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`QMP ${what}: no answer in ${QMP_TIMEOUT_MS} ms`)), QMP_TIMEOUT_MS)
      this.waiting.push({ resolve: (v) => { clearTimeout(timer); resolve(v) }, reject: (e) => { clearTimeout(timer); reject(e) }, what })
    })
  }

  execute (command: string, args?: Record<string, unknown>): Promise<any> {
    const p = this.next(command)
    this.sock.write(JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args }) + '\n')
    return p
  }

  close (): void { this.sock.destroy() }
}

// ---- the guest process ---------------------------------------------------------------------

export type Accel = 'kvm' | 'tcg'

export interface SerialLine { text: string, atMs: number }

export interface GuestOptions {
  image: GuestImage
  disk: string                // a file; or, with nbd, the NBD socket (the agent's DIR/<disk>.sock)
  nbd?: { export: string, reconnectDelaySec?: number } // the disk over NBD (QEMU's own client)
  dir: string                 // sockets and logs go here
  name: string
  accel: Accel
  cache?: string              // QEMU cache= (default none: O_DIRECT, what libvirt needs for migration)
  aio?: string                // QEMU aio= (default threads)
  slots?: number              // records the guest cycles through (ukai.slots)
  incomingPort?: number       // start as a migration destination on 127.0.0.1:PORT
  memMiB?: number
  append?: string             // more kernel command line
  trace?: string[]            // QEMU trace events to enable (read back with traceEvents())
}

// One QEMU trace event (the log backend on stderr, `-msg timestamp=on`: "PID@SEC.USEC:NAME ARGS").
export interface TraceEvent { name: string, args: string, atMs: number }

export class QemuGuest {
  readonly serial: SerialLine[] = []
  readonly qmpPath: string
  readonly logFile: string
  private readonly child: ChildProcess
  private partial = ''
  private exited: string | null = null
  private readonly stderrChunks: string[] = []
  private listeners: Array<() => void> = []
  qmp: Qmp | null = null

  private constructor (opts: GuestOptions) {
    this.qmpPath = path.join(opts.dir, `${opts.name}.qmp`)
    this.logFile = path.join(opts.dir, `${opts.name}.serial.log`)
    fs.rmSync(this.qmpPath, { force: true })
    const drive = opts.nbd === undefined
      ? [`file=${opts.disk}`, 'format=raw', 'if=virtio', `cache=${opts.cache ?? 'none'}`, `aio=${opts.aio ?? 'threads'}`].join(',')
      // No aio= (a property of the file driver) and no cache=: QEMU's NBD client has no host page
      // cache in its way; migration needs none of cache.direct's guarantees over NBD.
      : ['driver=raw', 'file.driver=nbd', 'file.server.type=unix', `file.server.path=${opts.disk}`, `file.export=${opts.nbd.export}`,
          ...(opts.nbd.reconnectDelaySec !== undefined ? [`file.reconnect-delay=${opts.nbd.reconnectDelaySec}`] : []), 'if=virtio'].join(',')
    const argv = [
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-machine', `pc,accel=${opts.accel}`, '-m', String(opts.memMiB ?? 128),
      '-kernel', opts.image.kernel, '-initrd', opts.image.initrd,
      '-append', `console=ttyS0 panic=-1 quiet ${GUEST_KERNEL_ARGS} ukai.slots=${opts.slots ?? 64} ${opts.append ?? ''}`.trim(),
      '-drive', drive,
      '-serial', 'stdio', '-monitor', 'none',
      '-qmp', `unix:${this.qmpPath},server=on,wait=off`,
      ...(opts.trace === undefined ? [] : ['-msg', 'timestamp=on', ...opts.trace.flatMap(e => ['-trace', `enable=${e}`])]),
      ...(opts.incomingPort !== undefined ? ['-incoming', `tcp:127.0.0.1:${opts.incomingPort}`] : [])
    ]
    const log = fs.openSync(this.logFile, 'a')
    this.child = spawn(QEMU, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(this.child)
    this.child.stdout?.setEncoding('utf8')
    this.child.stdout?.on('data', (d: string) => {
      fs.writeSync(log, d)
      const now = Date.now()
      this.partial += d
      const lines = this.partial.split(/\r?\n/)
      this.partial = lines.pop() ?? ''
      for (const l of lines) this.serial.push({ text: l, atMs: now })
      for (const f of this.listeners.splice(0)) f()
    })
    this.child.stderr?.setEncoding('utf8')
    this.child.stderr?.on('data', (d: string) => { this.stderrChunks.push(d); fs.writeSync(log, d) })
    this.child.on('exit', (code, sig) => {
      this.exited = sig !== null ? `killed by ${sig}` : `exited with code ${code}`
      live.delete(this.child)
      fs.closeSync(log)
      for (const f of this.listeners.splice(0)) f()
    })
  }

  static async start (opts: GuestOptions): Promise<QemuGuest> {
    const g = new QemuGuest(opts)
    g.qmp = await Qmp.connect(g.qmpPath).catch((err) => { g.kill(); throw new Error(`${(err as Error).message}; ${g.describeExit()}`) })
    return g
  }

  get pid (): number { return this.child.pid ?? -1 }
  get exitReason (): string | null { return this.exited }
  get stderr (): string { return this.stderrChunks.join('') }
  describeExit (): string { return `qemu ${this.exited ?? 'running'}; stderr: ${this.stderrChunks.join('').trim().slice(-600) || '(none)'}` }

  // Waits for a serial line matching RE (searching from line index FROM).
  async waitSerial (re: RegExp, opts: { timeoutMs?: number, from?: number } = {}): Promise<SerialLine> {
    const deadline = Date.now() + (opts.timeoutMs ?? BOOT_TIMEOUT_MS)
    let i = opts.from ?? 0
    for (;;) {
      for (; i < this.serial.length; i++) if (re.test(this.serial[i].text)) return this.serial[i]
      if (this.exited !== null) throw new Error(`waiting for ${re} on the serial console: ${this.describeExit()}\n${this.tail()}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${re} on the serial console in ${opts.timeoutMs ?? BOOT_TIMEOUT_MS} ms\n${this.tail()}`)
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, Math.min(left, 500)); this.listeners.push(() => { clearTimeout(t); resolve() }) })
    }
  }

  traceEvents (): TraceEvent[] {
    const out: TraceEvent[] = []
    for (const l of this.stderr.split('\n')) {
      const m = /^\d+@(\d+)\.(\d{6}):(\S+) ?(.*)$/.exec(l)
      if (m !== null) out.push({ name: m[3], args: m[4], atMs: Number(m[1]) * 1000 + Number(m[2]) / 1000 })
    }
    return out
  }

  tail (n = 15): string { return this.serial.slice(-n).map(l => l.text).join('\n') }

  // The guest's verification rounds: seq numbers and FAIL lines seen so far.
  progress (): { lastSeq: number, oks: number, fails: string[] } {
    let lastSeq = -1
    let oks = 0
    const fails: string[] = []
    for (const l of this.serial) {
      const m = /UKAI-GUEST ok seq=(\d+) fails=(\d+)/.exec(l.text)
      if (m !== null) { lastSeq = Number(m[1]); oks++; if (m[2] !== '0' && fails.length === 0) fails.push(l.text) }
      if (l.text.includes('UKAI-GUEST FAIL')) fails.push(l.text)
    }
    return { lastSeq, oks, fails }
  }

  kill (): void {
    this.qmp?.close()
    if (this.exited === null) this.child.kill('SIGKILL')
  }

  async stop (): Promise<void> {
    if (this.exited !== null) { this.qmp?.close(); return }
    const gone = new Promise<void>(resolve => this.child.once('exit', () => resolve()))
    this.kill()
    await gone
  }
}

const live = new Set<ChildProcess>()
process.on('exit', () => { for (const c of live) { try { c.kill('SIGKILL') } catch {} } })

// ---- availability and acceleration ---------------------------------------------------------

export function qemuUnavailable (): string | null {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8', timeout: 10_000 })
  if (r.status !== 0) return `${QEMU} cannot run here: ${(r.error?.message ?? r.stderr ?? '').trim() || `exit ${r.status}`} (Debian package qemu-system-x86)`
  return null
}

// KVM only if it actually boots our guest (a nested /dev/kvm may fail with "emulation failure");
// the answer is cached per host kernel and QEMU version.
export async function chooseAccel (image: GuestImage, scratchDisk: string): Promise<{ accel: Accel, why: string }> {
  if (process.env.UKAI_TEST_ACCEL === 'tcg' || process.env.UKAI_TEST_ACCEL === 'kvm') return { accel: process.env.UKAI_TEST_ACCEL, why: 'UKAI_TEST_ACCEL' }
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK)
  } catch {
    return { accel: 'tcg', why: '/dev/kvm not usable' }
  }
  const version = (spawnSync(QEMU, ['--version'], { encoding: 'utf8' }).stdout ?? '').split('\n')[0]
  const key = `${os.release()} ${version}`.replace(/[^A-Za-z0-9.]+/g, '_')
  const cacheFile = path.join(GUEST_CACHE_DIR, `accel-${key}.json`)
  try {
    const cached = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as { accel: Accel, why: string }
    return { accel: cached.accel, why: `${cached.why} (cached)` }
  } catch {}
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-kvm-probe-'))
  let result: { accel: Accel, why: string }
  let g: QemuGuest | null = null
  try {
    g = await QemuGuest.start({ image, disk: scratchDisk, dir, name: 'probe', accel: 'kvm', slots: 4 })
    await g.waitSerial(/UKAI-GUEST ok seq=/, { timeoutMs: KVM_PROBE_MS })
    result = { accel: 'kvm', why: 'KVM booted the guest' }
  } catch (err) {
    result = { accel: 'tcg', why: `KVM did not boot the guest: ${(err as Error).message.split('\n')[0].slice(0, 200)}` }
  } finally {
    await g?.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  fs.mkdirSync(GUEST_CACHE_DIR, { recursive: true })
  fs.writeFileSync(cacheFile, JSON.stringify(result))
  return result
}
