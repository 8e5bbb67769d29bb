// Two sites with an emulated WAN between them, for the migration test and benchmark:
//   site-a: storage nodes a1, a2 and hypervisor hv-a      site-b: nodes b1, b2 and hypervisor hv-b
// Every path that crosses the sites goes through a delaying proxy (src/dev/wan-proxy.ts):
// hv-a → b1/b2 and hv-b → a1/a2 (each agent's --node-address), and b1/b2 → a1/a2 (the targets'
// --peer-address, over which a relocation A → B pulls its blocks). ZooKeeper is reached directly.
import path from 'node:path'
import { makeTempDir, startAgent, startNode, startZk, type AgentFixture, type NodeFixture, type TestLike, type ZkFixture } from './cluster'
import { startWanProxy } from './wan'

export interface WanSites {
  zk: ZkFixture
  nodes: Record<'a1' | 'a2' | 'b1' | 'b2', NodeFixture>
  a: AgentFixture
  b: AgentFixture
  nbdDir: { a: string, b: string } | null // each agent's --nbd-dir (sockets DIR/<disk>.sock), with opts.nbd
}

export interface WanSitesOptions {
  delayMs: number          // one way, each direction
  copyMbps?: number        // cap on each node-to-node link B ← A (per connection); none by default
  dataMbps?: number        // cap on each agent-to-far-node link
  agentArgs?: string[]
  nbd?: boolean            // each agent also serves NBD (--nbd-dir)
}

export async function startWanSites (t: TestLike, opts: WanSitesOptions): Promise<WanSites> {
  const zk = await startZk(t)
  const [a1, a2] = await Promise.all(['a1', 'a2'].map(id => startNode(t, { zk, id, site: 'site-a' })))
  const peerArgs: string[] = []
  for (const n of [a1, a2]) {
    const p = await startWanProxy(t, { target: n.address, delayMs: opts.delayMs, mbps: opts.copyMbps })
    peerArgs.push('--peer-address', `${n.id}=${p.address}`)
  }
  const [b1, b2] = await Promise.all(['b1', 'b2'].map(id => startNode(t, { zk, id, site: 'site-b', extraArgs: peerArgs })))
  const far = async (nodes: NodeFixture[]): Promise<string[]> => {
    const args: string[] = []
    for (const n of nodes) {
      const p = await startWanProxy(t, { target: n.address, delayMs: opts.delayMs, mbps: opts.dataMbps })
      args.push('--node-address', `${n.id}=${p.address}`)
    }
    return args
  }
  const extra = opts.agentArgs ?? []
  const sockets = opts.nbd === true ? makeTempDir(t, 'nbd-sites') : null
  const nbdDir = sockets === null ? null : { a: path.join(sockets, 'hv-a'), b: path.join(sockets, 'hv-b') }
  const nbdArgs = (d: string | undefined): string[] => d === undefined ? [] : ['--nbd-dir', d]
  const [a, b] = await Promise.all([
    far([b1, b2]).then(args => startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: [...args, ...extra, ...nbdArgs(nbdDir?.a)] })),
    far([a1, a2]).then(args => startAgent(t, { zk, host: 'hv-b', site: 'site-b', extraArgs: [...args, ...extra, ...nbdArgs(nbdDir?.b)] }))
  ])
  return { zk, nodes: { a1, a2, b1, b2 }, a, b, nbdDir }
}
