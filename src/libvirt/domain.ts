// What the hook needs from a libvirt domain definition: its name and the file-backed disks, and
// which of those live on a UKAI mount (the disk name is the file name in the mount's root).
import path from 'node:path'
import { UkaiError } from '../errors'
import { child, childrenNamed, parseXml } from './xml'

export interface DomainDisk {
  file: string           // <source file='…'/>
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
    if (d.attrs.type !== 'file') continue
    const file = child(d, 'source')?.attrs.file
    if (file === undefined || file === '') continue // an empty cdrom drive
    const driver = child(d, 'driver')
    disks.push({
      file,
      target: child(d, 'target')?.attrs.dev ?? '',
      cache: driver?.attrs.cache ?? '',
      io: driver?.attrs.io ?? '',
      readonly: child(d, 'readonly') !== undefined
    })
  }
  return { name, uuid, disks }
}

export interface UkaiDiskRef { disk: string, file: string, mountPoint: string, readonly: boolean, cache: string }

// The domain's disks that are files directly in the root of one of the mount points. Paths are
// compared as strings (resolved, never stat'ed: a hook must not touch a FUSE mount that might hang).
export function ukaiDisks (domain: DomainInfo, mountPoints: string[]): UkaiDiskRef[] {
  const out: UkaiDiskRef[] = []
  for (const d of domain.disks) {
    if (!path.isAbsolute(d.file)) continue
    const file = path.resolve(d.file)
    for (const m of mountPoints) {
      const mp = path.resolve(m)
      if (path.dirname(file) === mp && path.basename(file) !== '') {
        out.push({ disk: path.basename(file), file, mountPoint: mp, readonly: d.readonly, cache: d.cache })
        break
      }
    }
  }
  return out
}
