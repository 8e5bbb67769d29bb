// What a storage node holds of a disk, read straight from its data dir (DATA/disks/<uuid>/).
import fs from 'node:fs'
import path from 'node:path'

// Version files (<block>.<epoch>) of a disk on a node's data dir; none when it has no dir there.
export function versionFiles (dataDir: string, uuid: string): string[] {
  const dir = path.join(dataDir, 'disks', uuid)
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter(f => /^\d+\.\d+$/.test(f)) : []
}

// Corrupts one byte of a node's file in place (XOR with MASK): bit rot, for the checksum tests.
export function flipByte (file: string, at: number, mask = 0xff): void {
  const fd = fs.openSync(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, at)
    b[0] ^= mask
    fs.writeSync(fd, b, 0, 1, at)
  } finally { fs.closeSync(fd) }
}
