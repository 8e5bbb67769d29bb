// A raw ZooKeeper view for tests that must prove a refused change touched nothing: every znode
// (path → data) under the disks and the tenants, compared before and after.
import zookeeper from 'node-zookeeper-client'
import { paths } from '../../src/meta/schema'
import { processZkAuth } from './cluster'

export async function rawClient (t: { teardown: (fn: () => void) => void }, connectString: string): Promise<zookeeper.Client> {
  const client = zookeeper.createClient(connectString, { sessionTimeout: 5_000, retries: 0 })
  const auth = processZkAuth()
  client.addAuthInfo('digest', Buffer.from(`${auth.user}:${auth.password}`))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { client.close(); reject(new Error('no ZooKeeper session')) }, 10_000)
    client.once('connected', () => { clearTimeout(timer); resolve() })
    client.connect()
  })
  t.teardown(() => client.close())
  return client
}
const get = (c: zookeeper.Client, p: string): Promise<Buffer> => new Promise((resolve, reject) => c.getData(p, (err, data) => err != null ? reject(err) : resolve(data ?? Buffer.alloc(0))))
const children = (c: zookeeper.Client, p: string): Promise<string[]> => new Promise((resolve, reject) => c.getChildren(p, (err, ch) => err != null ? reject(err) : resolve(ch)))

// Every znode (path → data) under the disks and the tenants: what a refused change must not touch.
export async function metaTree (c: zookeeper.Client): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (p: string): Promise<void> => {
    out[p] = (await get(c, p)).toString('base64')
    for (const ch of (await children(c, p)).sort()) await walk(`${p}/${ch}`)
  }
  await walk(paths.disks)
  await walk(paths.tenants)
  return out
}
