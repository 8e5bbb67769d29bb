// What chown, chmod and the xattr calls change: the disk record's `file` (owner, group, mode)
// and `xattrs`, so every mount shows the same. libvirt chowns an image to libvirt-qemu and keeps
// the original owner in trusted.libvirt.security.* to restore it later, possibly from another
// host after a migration. Changes are conditional on the record's ZooKeeper version, retried on
// a conflict (a resize racing a chown).
import { UkaiError } from '../errors'
import { DiskFileOwner, DiskRecord, XATTR_VALUE_MAX_BYTES, XATTRS_TOTAL_MAX_BYTES } from '../meta/schema'

// setxattr(2) flags (linux/xattr.h).
export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2
// chown(2) passes (uid_t)-1 for "leave as it is".
const ID_UNCHANGED = 0xffffffff
const PERMISSION_BITS = 0o7777
// Stored as given. system.* (POSIX ACLs) is refused: libfuse2 cannot make the kernel enforce an
// ACL, and silently keeping one would mislead.
const XATTR_NAMESPACES = ['user.', 'trusted.', 'security.']

export { updateDiskRecord, type VersionedDiskRecord } from '../meta/disk-record-update'

export function ownerOf (rec: DiskRecord, fallback: DiskFileOwner): DiskFileOwner {
  return rec.file ?? fallback
}

export function withOwner (rec: DiskRecord, fallback: DiskFileOwner, uid: number, gid: number): DiskRecord {
  const cur = ownerOf(rec, fallback)
  const next = { ...cur, uid: uid === ID_UNCHANGED ? cur.uid : uid, gid: gid === ID_UNCHANGED ? cur.gid : gid }
  for (const id of [next.uid, next.gid]) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= ID_UNCHANGED) throw UkaiError.badArgument(`bad owner id ${id} for disk '${rec.name}'`)
  }
  return { ...rec, file: next }
}

export function withMode (rec: DiskRecord, fallback: DiskFileOwner, mode: number): DiskRecord {
  return { ...rec, file: { ...ownerOf(rec, fallback), mode: mode & PERMISSION_BITS } }
}

export function xattrNames (rec: DiskRecord): string[] {
  return Object.keys(rec.xattrs ?? {}).sort()
}

export function getXattr (rec: DiskRecord, attr: string): Buffer {
  const v = rec.xattrs?.[attr]
  if (v === undefined) throw UkaiError.noAttribute(`disk '${rec.name}' has no extended attribute '${attr}'`)
  return Buffer.from(v, 'base64')
}

export function withXattr (rec: DiskRecord, attr: string, value: Buffer, flags: number): DiskRecord {
  checkNamespace(rec, attr)
  const exists = rec.xattrs?.[attr] !== undefined
  if ((flags & XATTR_CREATE) !== 0 && exists) throw UkaiError.alreadyExists(`disk '${rec.name}' already has extended attribute '${attr}'`)
  if ((flags & XATTR_REPLACE) !== 0 && !exists) throw UkaiError.noAttribute(`disk '${rec.name}' has no extended attribute '${attr}' to replace`)
  if (value.length > XATTR_VALUE_MAX_BYTES) {
    throw UkaiError.tooBig(`extended attribute '${attr}' of disk '${rec.name}': ${value.length} bytes is over the limit of ${XATTR_VALUE_MAX_BYTES}`)
  }
  const xattrs = { ...rec.xattrs, [attr]: value.toString('base64') }
  const total = totalBytes(xattrs)
  if (total > XATTRS_TOTAL_MAX_BYTES) {
    throw UkaiError.noSpace(`extended attributes of disk '${rec.name}' would take ${total} bytes, over the limit of ${XATTRS_TOTAL_MAX_BYTES}`)
  }
  return { ...rec, xattrs }
}

export function withoutXattr (rec: DiskRecord, attr: string): DiskRecord {
  if (rec.xattrs?.[attr] === undefined) throw UkaiError.noAttribute(`disk '${rec.name}' has no extended attribute '${attr}'`)
  const xattrs = { ...rec.xattrs }
  delete xattrs[attr]
  return { ...rec, xattrs }
}

function checkNamespace (rec: DiskRecord, attr: string): void {
  if (!XATTR_NAMESPACES.some(ns => attr.startsWith(ns) && attr.length > ns.length)) {
    throw UkaiError.notSupported(`extended attribute '${attr}' on disk '${rec.name}': only the ${XATTR_NAMESPACES.map(n => n + '*').join(', ')} namespaces are stored`)
  }
}

function totalBytes (xattrs: Record<string, string>): number {
  let n = 0
  for (const [k, v] of Object.entries(xattrs)) n += Buffer.byteLength(k) + Buffer.byteLength(v, 'base64')
  return n
}
