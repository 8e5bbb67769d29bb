// What a storage node holds of a disk, read straight from its data dir (DATA/disks/<uuid>/).
import fs from 'node:fs'
import path from 'node:path'

// Version files (<block>.<epoch>) of a disk on a node's data dir; none when it has no dir there.
export function versionFiles (dataDir: string, uuid: string): string[] {
  const dir = path.join(dataDir, 'disks', uuid)
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter(f => /^\d+\.\d+$/.test(f)) : []
}
