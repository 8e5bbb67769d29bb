// ZooKeeper credentials for a whole test or benchmark process: one file (mode 0600) in a private
// temp dir, named in $UKAI_ZK_AUTH so that every daemon and CLI this process spawns inherits it
// (daemonEnv() copies the environment), and returned for the process's own MetaStore sessions.
// One set per process, not per ZooKeeper: a test that starts two clusters, or restarts one,
// needs nothing more. A caller's own $UKAI_ZK_AUTH is kept.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { ZK_AUTH_FILE_ENV, createZkAuthFile, readZkAuthFile, type ZkAuth } from '../meta/credentials'

let auth: ZkAuth | null = null

export function processZkAuth (): ZkAuth {
  if (auth !== null) return auth
  const given = process.env[ZK_AUTH_FILE_ENV]
  if (given !== undefined && given !== '') {
    auth = readZkAuthFile(given)
    return auth
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-zk-auth-'))
  process.on('exit', () => { try { fs.rmSync(dir, { recursive: true, force: true }) } catch {} })
  auth = createZkAuthFile(path.join(dir, 'zk-auth'))
  process.env[ZK_AUTH_FILE_ENV] = auth.file
  return auth
}
