// The libvirt hook's settings: /etc/ukai/hook.conf (or --config / $UKAI_HOOK_CONF), `key = value`
// lines, '#' starts a comment. libvirt runs the hook with a scrubbed environment, so everything
// the hook needs is in this file, written by `ukai libvirt install-hook`.
//
//   zk = zk1:2181,zk2:2181,zk3:2181     ZooKeeper (default 127.0.0.1:2181)
//   zk-auth = /etc/ukai/zk-auth         ZooKeeper credentials file (mode 0600; the default)
//   insecure-zk = yes                   instead of zk-auth: no credentials (world-open znodes)
//   tls-dir = /etc/ukai/tls/admin       the certificate the hook talks to storage nodes with (a
//                                       relocation's plan samples blocks; the default)
//   insecure = yes                      instead of tls-dir: plaintext (a cluster run --insecure)
//   host = hv-a1                        this hypervisor's agent name, as in `ukai mount --host`
//                                       (default: the host name)
//   mount = /var/lib/ukai/mnt           the agent's mount point (repeatable; default: every
//                                       mounted UKAI file system, from /proc/self/mounts)
//   timeout-ms = 4000                   the most one hook call may take; then it gives up, logs
//                                       and lets libvirt go on
//   log = /var/log/ukai/libvirt-hook.log   one JSON line per call (and per action)
//   rate = 100                          cap (MB/s) on the copy of relocations the hook starts
//                                       (default: none)
//   nbd-dir = /var/lib/ukai/nbd         the agent's NBD socket directory (`ukai mount --nbd-dir`;
//                                       repeatable): NBD disks on DIR/<disk>.sock are UKAI disks
import fs from 'node:fs'
import os from 'node:os'
import { UkaiError } from '../errors'
import { validateId } from '../meta/schema'
import { listMounts } from '../lib/mounts'
import { ZK_AUTH_FILE_DEFAULT } from '../meta/credentials'

// Where an admin's certificate lives by default (the CLI's default too: cli/tls-options.ts).
export const TLS_DIR_DEFAULT = '/etc/ukai/tls/admin'

export const HOOK_CONFIG_PATH_DEFAULT = '/etc/ukai/hook.conf'
export const HOOK_LOG_PATH_DEFAULT = '/var/log/ukai/libvirt-hook.log'
export const HOOK_TIMEOUT_MS_DEFAULT = 4000
const HOOK_TIMEOUT_MS_MAX = 30_000
export const UKAI_FSTYPE = 'fuse.ukai'

export interface HookConfig {
  zk: string
  zkAuthFile: string | null  // null: insecure-zk = yes
  tlsDir: string | null      // null: insecure = yes
  host: string
  mounts: string[]       // empty: whatever UKAI mounts exist when the hook runs
  nbdDirs: string[]      // NBD socket directories (none: NBD disks are not recognised)
  timeoutMs: number
  logFile: string
  rateBytesPerSec: number  // 0: no cap
  source: string         // the file read, or '(defaults)'
}

export function parseHookConfig (text: string, source: string): HookConfig {
  const cfg: HookConfig = { zk: '127.0.0.1:2181', zkAuthFile: ZK_AUTH_FILE_DEFAULT, tlsDir: TLS_DIR_DEFAULT, host: os.hostname(), mounts: [], nbdDirs: [], timeoutMs: HOOK_TIMEOUT_MS_DEFAULT, logFile: HOOK_LOG_PATH_DEFAULT, rateBytesPerSec: 0, source }
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim()
    if (line === '') return
    const m = /^([a-z-]+)\s*=\s*(.*)$/.exec(line)
    if (m === null) throw UkaiError.badArgument(`${source} line ${i + 1}: expected 'key = value', got '${raw.trim()}'`)
    const [, key, value] = m
    switch (key) {
      case 'zk': cfg.zk = value; break
      case 'zk-auth': cfg.zkAuthFile = value; break
      case 'insecure-zk':
        if (value !== 'yes' && value !== 'no') throw UkaiError.badArgument(`${source} line ${i + 1}: insecure-zk must be yes or no`)
        if (value === 'yes') cfg.zkAuthFile = null
        break
      case 'tls-dir': cfg.tlsDir = value; break
      case 'insecure':
        if (value !== 'yes' && value !== 'no') throw UkaiError.badArgument(`${source} line ${i + 1}: insecure must be yes or no`)
        if (value === 'yes') cfg.tlsDir = null
        break
      case 'host': validateId(value, `host in ${source}`); cfg.host = value; break
      case 'mount': cfg.mounts.push(value); break
      case 'nbd-dir': cfg.nbdDirs.push(value); break
      case 'log': cfg.logFile = value; break
      case 'timeout-ms': {
        const ms = Number(value)
        if (!Number.isInteger(ms) || ms < 100 || ms > HOOK_TIMEOUT_MS_MAX) throw UkaiError.badArgument(`${source} line ${i + 1}: timeout-ms must be 100..${HOOK_TIMEOUT_MS_MAX}`)
        cfg.timeoutMs = ms
        break
      }
      case 'rate': {
        const mbps = Number(value)
        if (!Number.isFinite(mbps) || mbps < 0) throw UkaiError.badArgument(`${source} line ${i + 1}: rate must be MB/s, a number >= 0`)
        cfg.rateBytesPerSec = Math.round(mbps * 1e6)
        break
      }
      default: throw UkaiError.badArgument(`${source} line ${i + 1}: unknown key '${key}' (known: zk, zk-auth, insecure-zk, tls-dir, insecure, host, mount, nbd-dir, timeout-ms, log, rate)`)
    }
  })
  if (cfg.zk === '') throw UkaiError.badArgument(`${source}: zk is empty`)
  return cfg
}

// A missing default file means defaults; a missing file someone named explicitly is an error.
export function loadHookConfig (file: string | undefined): HookConfig {
  const named = file ?? process.env.UKAI_HOOK_CONF
  const p = named ?? HOOK_CONFIG_PATH_DEFAULT
  let text: string
  try {
    text = fs.readFileSync(p, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && named === undefined) return parseHookConfig('', '(defaults)')
    throw UkaiError.badArgument(`cannot read hook config ${p}: ${(err as Error).message}`)
  }
  return parseHookConfig(text, p)
}

export function formatHookConfig (cfg: Pick<HookConfig, 'zk' | 'zkAuthFile' | 'tlsDir' | 'host' | 'mounts' | 'timeoutMs' | 'logFile' | 'rateBytesPerSec'> & { nbdDirs?: string[] }): string {
  return [
    '# UKAI libvirt hook settings (written by `ukai libvirt install-hook`; see src/libvirt/hook-config.ts)',
    `zk = ${cfg.zk}`,
    `host = ${cfg.host}`,
    cfg.zkAuthFile === null ? 'insecure-zk = yes' : `zk-auth = ${cfg.zkAuthFile}`,
    cfg.tlsDir === null ? 'insecure = yes' : `tls-dir = ${cfg.tlsDir}`,
    ...cfg.mounts.map(m => `mount = ${m}`),
    ...(cfg.nbdDirs ?? []).map(d => `nbd-dir = ${d}`),
    `timeout-ms = ${cfg.timeoutMs}`,
    `log = ${cfg.logFile}`,
    ...(cfg.rateBytesPerSec > 0 ? [`rate = ${cfg.rateBytesPerSec / 1e6}`] : []),
    ''
  ].join('\n')
}

// The mount points to look for disks under: the configured ones, else every UKAI mount.
export function hookMountPoints (cfg: HookConfig): string[] {
  if (cfg.mounts.length > 0) return cfg.mounts
  return listMounts().filter(m => m.fstype === UKAI_FSTYPE).map(m => m.target)
}
