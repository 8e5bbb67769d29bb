// The dev cluster's certificates: a CA in DIR/tls/ca (kept across `dev down`/`dev up`, so the
// admin certificate a shell exported stays good), and at every `dev up` one certificate per
// node, agent and the admin, each in its own dir under DIR/tls/ca (the layout `ukai cert
// revoke` refreshes). Issuing a dozen P-256 certificates takes ~0.3 s.
import fs from 'node:fs'
import path from 'node:path'

export const DEV_ADMIN = 'admin'

export interface DevTls { caDir: string, adminDir: string, nodeDir: (id: string) => string, agentDir: (host: string) => string }

export function devTlsLayout (clusterDir: string): DevTls {
  const caDir = path.join(clusterDir, 'tls', 'ca')
  return {
    caDir,
    adminDir: path.join(caDir, `admin-${DEV_ADMIN}`),
    nodeDir: (id) => path.join(caDir, `node-${id}`),
    agentDir: (host) => path.join(caDir, `agent-${host}`)
  }
}

export async function makeDevTls (clusterDir: string, who: { nodes: string[], agents: string[] }): Promise<DevTls> {
  const { CA_KEY_FILE, initCa, issueCert } = await import('../security/ca')  // loaded only here: see cli/ca-commands.ts
  const tls = devTlsLayout(clusterDir)
  if (!fs.existsSync(path.join(tls.caDir, CA_KEY_FILE))) await initCa(tls.caDir, { name: 'UKAI dev cluster CA' })
  await issueCert(tls.caDir, { role: 'admin', name: DEV_ADMIN })
  for (const id of who.nodes) await issueCert(tls.caDir, { role: 'node', name: id })
  for (const host of who.agents) await issueCert(tls.caDir, { role: 'agent', name: host })
  return tls
}
