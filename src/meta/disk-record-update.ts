// Read-modify-write of a disk record, conditional on its ZooKeeper version: what chown, chmod,
// the xattr calls (src/agent/disk-file-attrs.ts) and `ukai disk qos` (src/admin/disk-qos.ts)
// change. On a conflict (a resize racing a chown) it starts again from a fresh read.
import { isUkaiError } from '../errors'
import { DiskRecord } from './schema'
import { MetaStore } from './store'

const UPDATE_ATTEMPTS_MAX = 8

export type VersionedDiskRecord = DiskRecord & { version: number }

// Reads the record, applies `change` (which may throw to refuse: nothing is written), writes it
// back if it is still the version read.
export async function updateDiskRecord (meta: MetaStore, name: string, change: (rec: DiskRecord) => DiskRecord): Promise<VersionedDiskRecord> {
  for (let attempt = 1; ; attempt++) {
    const { version, ...rec } = await meta.getDisk(name)
    const next = change(rec)
    try {
      return { ...next, version: await meta.setDiskRecord(next, version) }
    } catch (err) {
      if (!isUkaiError(err, 'ZK_CONFLICT') || attempt >= UPDATE_ATTEMPTS_MAX) throw err
    }
  }
}
