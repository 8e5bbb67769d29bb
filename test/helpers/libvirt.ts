// Calling the installed libvirt hook the way libvirtd does: `HOOK DOMAIN OP SUB-OP EXTRA`, the
// domain XML on stdin, a scrubbed environment (libvirt passes little more than PATH and HOME).
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { runCli } from './cli'
import { identityDir } from './tls'

export interface HookRun { code: number, stdout: string, stderr: string, ms: number }

export function runHookScript (hook: string, args: [string, string, string, string], xml: string, opts: { timeoutMs?: number } = {}): Promise<HookRun> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(hook, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.stdin.on('error', () => {}) // the hook may exit before reading everything
    child.stdin.end(xml)
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`hook ${args.join(' ')} ran past ${opts.timeoutMs ?? 30000} ms`)) }, opts.timeoutMs ?? 30000)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr, ms: Date.now() - started }) })
  })
}

// A minimal but realistic domain definition; `disks` are file paths (vda, vdb, …).
export function domainXml (name: string, disks: string[], opts: { cache?: string, io?: string } = {}): string {
  const devs = disks.map((file, i) => `    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='${opts.cache ?? 'none'}' io='${opts.io ?? 'native'}'/>
      <source file='${file.replace(/&/g, '&amp;').replace(/'/g, '&apos;')}'/>
      <target dev='vd${String.fromCharCode(97 + i)}' bus='virtio'/>
    </disk>`).join('\n')
  return `<domain type='kvm'>
  <name>${name}</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <!-- a cdrom with no medium, and the disks -->
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
${devs}
  </devices>
</domain>
`
}

export interface HookLogLine { msg: string, domain?: string, op?: string, subOp?: string, extra?: string, action?: string, lease?: string, disk?: string, err?: string, [k: string]: unknown }

export function readHookLog (text: string): HookLogLine[] {
  return text.split('\n').filter(l => l.trim() !== '').map(l => JSON.parse(l) as HookLogLine)
}

// Installs the hook as `ukai libvirt install-hook` does, into DIR/hooks-HOST, with its own config
// and log: one installation per simulated hypervisor. The hook talks to the nodes with the
// hypervisor's agent certificate (`--tls-dir`, written to hook.conf): no admin key on a hypervisor.
// A domain with one file disk on a mount (sda) and NBD disks: on a unix socket, or on TCP.
export function nbdDomain (name: string, disks: Array<{ socket?: string, exportName?: string, host?: string }>): string {
  const devs = disks.map((d, i) => `    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source protocol='nbd'${d.exportName === undefined ? '' : ` name='${d.exportName}'`}>
        ${d.socket !== undefined ? `<host transport='unix' socket='${d.socket}'/>` : `<host name='${d.host ?? '127.0.0.1'}' port='10809'/>`}
      </source>
      <target dev='vd${String.fromCharCode(97 + i)}' bus='virtio'/>
    </disk>`).join('\n')
  return `<domain type='kvm'>
  <name>${name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/ukai/mnt/data1'/><target dev='sda' bus='sata'/></disk>
${devs}
  </devices>
</domain>
`
}

export async function installHookFor (dir: string, zk: string, host: string, mount: string, extra: string[] = []): Promise<{ hook: string, log: string, conf: string }> {
  const conf = path.join(dir, `${host}.conf`)
  const log = path.join(dir, `${host}.log`)
  const res = await runCli(['libvirt', 'install-hook', '--dir', path.join(dir, `hooks-${host}`), '--config', conf, '--host', host, '--mount', mount, '--log', log, '--json', '--tls-dir', await identityDir({ role: 'agent', name: host }), ...extra], { zk })
  if (res.code !== 0) throw new Error(`install-hook failed: ${res.stderr}`)
  return { hook: (JSON.parse(res.stdout) as { path: string }).path, log, conf }
}

export function hookLog (file: string): HookLogLine[] {
  return fs.existsSync(file) ? readHookLog(fs.readFileSync(file, 'utf8')) : []
}
