// The certificates of the clusters a test process starts (startNode, startAgent, startCluster):
// one CA per test process, made at first use in a temp dir removed at exit; one certificate per
// node id, agent host and the admin. The test process itself talks to the nodes as the admin
// (setClientTls), and so does every `ukai` it runs (runCli passes UKAI_TLS_DIR).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { initCa, issueCert } from '../../src/security/ca'
import type { Identity } from '../../src/storagenode/identity'
import { openTlsDir, setClientTls } from '../../src/storagenode/tls'

let caDir: string | undefined
let ready: Promise<string> | undefined
const issued = new Map<string, Promise<string>>()

// The CA dir (made once per process).
export async function testCa (): Promise<string> {
  ready ??= (async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-test-tls-'))
    process.on('exit', () => { try { fs.rmSync(dir, { recursive: true, force: true }) } catch {} })
    await initCa(path.join(dir, 'ca'))
    caDir = path.join(dir, 'ca')
    const admin = await identityDir({ role: 'admin', name: 'test' })
    setClientTls({ kind: 'tls', files: openTlsDir(admin) })
    // Every `ukai` this process spawns (runCli, the export helpers' pipes) is the admin too.
    process.env.UKAI_TLS_DIR = admin
    return caDir
  })()
  return await ready
}

// The dir of `id`'s certificate (issued at first use).
export async function identityDir (id: Identity): Promise<string> {
  const key = `${id.role}-${id.name}`
  let p = issued.get(key)
  if (p === undefined) {
    p = (async () => (await issueCert(caDir ?? await testCa(), id)).dir)()
    issued.set(key, p)
  }
  return await p
}

// The admin certificate's dir once the test process made its CA, else undefined (a test that
// started no cluster through the helpers: its CLI runs find no certificate).
export function adminTlsDir (): string | undefined {
  return caDir === undefined ? undefined : path.join(caDir, 'admin-test')
}
