// The token a storage node writes into its data dir at every start and publishes in its
// liveness record. An agent that reads the same token from DATA/local-read-token knows it sees
// this node's files (same host, same mount, not a stale copy of the dir) and may read block
// versions directly instead of over gRPC (src/vdisk/short-circuit-reads.ts).
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

export const LOCAL_READ_TOKEN_FILE = 'local-read-token'
const TOKEN_BYTES = 16

// Writes a fresh token (tmp + rename, so a reader never sees half of one); returns it.
export function writeLocalReadToken (dataDir: string): string {
  const token = randomBytes(TOKEN_BYTES).toString('hex')
  const file = path.join(dataDir, LOCAL_READ_TOKEN_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  // 0600 like the block files: an agent reads block files directly only as the node's user.
  fs.writeFileSync(tmp, token, { mode: 0o600 })
  fs.renameSync(tmp, file)
  return token
}

// The token in dataDir, or null when there is none or it cannot be read.
export function readLocalReadToken (dataDir: string): string | null {
  try {
    return fs.readFileSync(path.join(dataDir, LOCAL_READ_TOKEN_FILE), 'utf8').trim()
  } catch {
    return null
  }
}
