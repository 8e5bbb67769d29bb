// `ukai libvirt install-hook`: puts libvirt/hooks/qemu where libvirt looks for it, with the node
// binary, the CLI and the config path filled in, without clobbering anybody else's hook.
//
// libvirt ≥ 6.5.0 also runs every executable in hooks/qemu.d/ (after hooks/qemu, in name order);
// there we install as qemu.d/ukai and never touch hooks/qemu. Older libvirt only has hooks/qemu:
// we install there if it is free (or already ours) and otherwise refuse, saying how to chain.
// libvirt finds hooks when the daemon starts: it must be restarted after the first install.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { UkaiError } from '../errors'
import { packageRoot } from '../package-root'

export const HOOK_MARKER = 'ukai-libvirt-hook'
export const HOOKS_DIR_DEFAULT = '/etc/libvirt/hooks'
const QEMU_D_SINCE: [number, number, number] = [6, 5, 0]

export function hookTemplatePath (): string {
  return path.join(packageRoot(), 'libvirt', 'hooks', 'qemu')
}

export function cliMainFile (): string {
  // Also from src/ (tests): the built CLI is what the hook must call.
  return path.join(packageRoot(), 'dist', 'src', 'cli', 'main.js')
}

// `libvirtd --version` → [9, 0, 0]; null when libvirtd is not installed here.
export function libvirtVersion (): [number, number, number] | null {
  for (const bin of ['libvirtd', '/usr/sbin/libvirtd', 'virtqemud', '/usr/sbin/virtqemud']) {
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 5000 })
    const m = /(\d+)\.(\d+)\.(\d+)/.exec(r.stdout ?? '')
    if (r.status === 0 && m !== null) return [Number(m[1]), Number(m[2]), Number(m[3])]
  }
  return null
}

function atLeast (v: [number, number, number], min: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i] > min[i]
  return true
}

function isOurs (file: string): boolean {
  try {
    return fs.readFileSync(file, 'utf8').includes(HOOK_MARKER)
  } catch {
    return false
  }
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`

export function renderHook (settings: { node: string, main: string, config: string }): string {
  const template = fs.readFileSync(hookTemplatePath(), 'utf8')
  const out = template
    .replace(/^UKAI_NODE=.*$/m, `UKAI_NODE=${shellQuote(settings.node)}`)
    .replace(/^UKAI_MAIN=.*$/m, `UKAI_MAIN=${shellQuote(settings.main)}`)
    .replace(/^UKAI_HOOK_CONF=.*$/m, `UKAI_HOOK_CONF=${shellQuote(settings.config)}`)
  if (!out.includes(HOOK_MARKER)) throw UkaiError.internal(`hook template ${hookTemplatePath()} lost its marker`)
  return out
}

export interface InstallResult { path: string, replaced: boolean, layout: 'qemu.d' | 'qemu', libvirtVersion: string }

export function installHook (opts: { dir: string, name: string, config: string, version?: [number, number, number] | null, force?: boolean }): InstallResult {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(opts.name)) throw UkaiError.badArgument(`bad hook name '${opts.name}'`)
  const version = opts.version === undefined ? libvirtVersion() : opts.version
  const useQemuD = version === null || atLeast(version, QEMU_D_SINCE)
  const target = useQemuD ? path.join(opts.dir, 'qemu.d', opts.name) : path.join(opts.dir, 'qemu')
  const exists = fs.existsSync(target)
  if (exists && !isOurs(target) && opts.force !== true) {
    throw UkaiError.busy(useQemuD
      ? `${target} exists and is not UKAI's hook; choose another --name or pass --force to replace it`
      : `${target} exists and is not UKAI's hook, and libvirt ${version?.join('.')} has no hooks/qemu.d (since 6.5.0): call ${renderTargetHint()} from your hook yourself`)
  }
  const text = renderHook({ node: process.execPath, main: cliMainFile(), config: opts.config })
  fs.mkdirSync(path.dirname(target), { recursive: true })
  const tmp = `${target}.ukai-tmp-${process.pid}`
  fs.writeFileSync(tmp, text, { mode: 0o755 })
  fs.renameSync(tmp, target)
  return { path: target, replaced: exists, layout: useQemuD ? 'qemu.d' : 'qemu', libvirtVersion: version === null ? 'unknown (libvirtd not found)' : version.join('.') }
}

function renderTargetHint (): string {
  return `'${hookTemplatePath()} "$@"' (passing stdin through)`
}
