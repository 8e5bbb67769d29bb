// What the hook needs from a libvirt domain definition: its name and the file-backed disks (and
// NBD disks on a Unix socket), and which of those are UKAI disks: a file in the root of a UKAI
// mount (the disk name is the file name), or an NBD socket DIR/<disk>.sock in an agent's NBD
// directory (`ukai mount --nbd-dir DIR`).
import path from 'node:path'
import { UkaiError } from '../errors'
import { child, childrenNamed, parseXml } from './xml'

// <disk type='network'><source protocol='nbd' name='EXPORT'><host transport='unix' socket='…'/>
export interface NbdSource { socket: string, exportName: string }

export interface DomainDisk {
  file: string           // <source file='…'/>; '' for an NBD disk
  nbd?: NbdSource
  target: string         // <target dev='vda'/>, '' when absent
  cache: string          // <driver cache='…'/>, '' when absent (libvirt's default)
  io: string             // <driver io='…'/>, '' when absent
  readonly: boolean
}

export interface DomainInfo { name: string, uuid: string, disks: DomainDisk[] }

export function parseDomain (xml: string): DomainInfo {
  const root = parseXml(xml)
  if (root.name !== 'domain') throw UkaiError.badArgument(`expected a <domain> definition, got <${root.name}>`)
  const name = child(root, 'name')?.text.trim() ?? ''
  const uuid = child(root, 'uuid')?.text.trim() ?? ''
  const devices = child(root, 'devices')
  const disks: DomainDisk[] = []
  for (const d of devices === undefined ? [] : childrenNamed(devices, 'disk')) {
    const source = child(d, 'source')
    let file = ''
    let nbd: NbdSource | undefined
    if (d.attrs.type === 'file') {
      file = source?.attrs.file ?? ''
      if (file === '') continue // an empty cdrom drive
    } else if (d.attrs.type === 'network' && source?.attrs.protocol === 'nbd') {
      const host = source === undefined ? undefined : child(source, 'host')
      if (host?.attrs.transport !== 'unix' || host.attrs.socket === undefined || host.attrs.socket === '') continue // NBD over TCP: not recognised
      nbd = { socket: host.attrs.socket, exportName: source.attrs.name ?? '' }
    } else {
      continue
    }
    const driver = child(d, 'driver')
    disks.push({
      file,
      ...(nbd === undefined ? {} : { nbd }),
      target: child(d, 'target')?.attrs.dev ?? '',
      cache: driver?.attrs.cache ?? '',
      io: driver?.attrs.io ?? '',
      readonly: child(d, 'readonly') !== undefined
    })
  }
  return { name, uuid, disks }
}

// `file` is the disk's file, or its NBD socket (then `mountPoint` is the NBD directory).
export interface UkaiDiskRef { disk: string, file: string, mountPoint: string, readonly: boolean, cache: string, via: 'file' | 'nbd' }

const NBD_SOCKET_SUFFIX = '.sock'

// The domain's disks that are files directly in the root of one of the mount points, or NBD
// disks on a socket DIR/<disk>.sock in one of `nbdDirs` whose export is that disk (a snapshot
// export, DISK@SNAP, is read-only: nothing to move or release). Paths are compared as strings
// (resolved, never stat'ed: a hook must not touch a FUSE mount that might hang).
export function ukaiDisks (domain: DomainInfo, mountPoints: string[], nbdDirs: string[] = []): UkaiDiskRef[] {
  const out: UkaiDiskRef[] = []
  for (const d of domain.disks) {
    if (d.nbd !== undefined) {
      const ref = nbdDisk(d, d.nbd, nbdDirs)
      if (ref !== null) out.push(ref)
      continue
    }
    if (!path.isAbsolute(d.file)) continue
    const file = path.resolve(d.file)
    for (const m of mountPoints) {
      const mp = path.resolve(m)
      if (path.dirname(file) === mp && path.basename(file) !== '') {
        out.push({ disk: path.basename(file), file, mountPoint: mp, readonly: d.readonly, cache: d.cache, via: 'file' })
        break
      }
    }
  }
  return out
}

function nbdDisk (d: DomainDisk, nbd: NbdSource, nbdDirs: string[]): UkaiDiskRef | null {
  if (!path.isAbsolute(nbd.socket)) return null
  const socket = path.resolve(nbd.socket)
  const base = path.basename(socket)
  if (!base.endsWith(NBD_SOCKET_SUFFIX) || base.length === NBD_SOCKET_SUFFIX.length) return null
  const disk = base.slice(0, -NBD_SOCKET_SUFFIX.length)
  if (nbd.exportName !== '' && nbd.exportName !== disk) return null // DISK@SNAP, or not ours
  const dir = nbdDirs.map(x => path.resolve(x)).find(x => path.dirname(socket) === x)
  if (dir === undefined) return null
  return { disk, file: socket, mountPoint: dir, readonly: d.readonly, cache: d.cache, via: 'nbd' }
}
