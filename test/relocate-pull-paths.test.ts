// Issue 13's relocation throughput: a block's targets pull it over different paths, so a move
// from 2 in-sync sources to 2 targets uses all 4 node-to-node paths (src/relocate/pull-paths.ts).
// Before, target i always took source i of the same list: b1 pulled every block from a1 and b2
// every block from a2 (bench/copy-throughput.ts used 2 of its 4 paths).
//   - PullPaths alone: the choice per block, the fallback order, the in-flight balance, the
//     nearer source first;
//   - real processes: a1,a2 → b1,b2 with each of the 4 paths b←a through its own proxy (the
//     targets' --peer-address), so the bytes each path carried are counted where the bench counts
//     them; every block on both targets equal to the model afterwards.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { PullPaths, pathCost } from '../src/relocate/pull-paths'
import { StorageClient } from '../src/storagenode/client'
import { fuseUnavailable, startAgent, startNode, startZk } from './helpers/cluster'
import { cliJson, runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'
import { startWanProxy } from './helpers/wan'

const MiB = 1024 * 1024
const DISK_BLOCKS = 16

t.test('PullPaths: which source each target of a block starts on', async (t) => {
  const id = (s: string): string => s
  t.test('one block at a time: the targets start on different sources, in turn per block', async (t) => {
    const paths = new PullPaths()
    const firsts = Array.from({ length: 4 }, () => paths.orders(['b1', 'b2'], ['a1', 'a2'], id).map(o => o[0]))
    t.same(firsts, [['a1', 'a2'], ['a2', 'a1'], ['a1', 'a2'], ['a2', 'a1']], 'each target takes both sources, one block after the other')
    t.same(paths.orders(['b1', 'b2'], ['a1', 'a2', 'a3'], id).map(o => [...o].sort()), [['a1', 'a2', 'a3'], ['a1', 'a2', 'a3']], 'every source stays a fallback')
    t.same(paths.orders(['a2'], ['a1', 'a2'], id), [['a1']], 'a target is never its own source')
  })

  t.test('blocks in flight: the least busy path first', async (t) => {
    const paths = new PullPaths()
    const running: Array<() => void> = []
    const perPath = new Map<string, number>()
    const pulls: Array<Promise<void>> = []
    for (let block = 0; block < 4; block++) {
      const orders = paths.orders(['b1', 'b2'], ['a1', 'a2'], id)
      orders.forEach((o, i) => {
        const key = `${o[0]}→b${i + 1}`
        perPath.set(key, (perPath.get(key) ?? 0) + 1)
        pulls.push(paths.pull(o[0], `b${i + 1}`, async () => await new Promise<void>(resolve => running.push(resolve))))
      })
    }
    t.same(Object.fromEntries([...perPath].sort()), { 'a1→b1': 2, 'a1→b2': 2, 'a2→b1': 2, 'a2→b2': 2 }, '4 blocks × 2 targets: 2 pulls on each of the 4 paths')
    running.splice(0, 2).forEach(end => end())  // block 0's pulls end: a1→b1 and a2→b2
    await Promise.all(pulls.slice(0, 2))
    t.same(paths.orders(['b1', 'b2'], ['a1', 'a2'], id).map(o => o[0]), ['a1', 'a2'], 'the next block takes the paths that freed up')
    running.forEach(end => end())
    await Promise.all(pulls)
  })

  t.test('the source nearest the target first, whatever the load', async (t) => {
    const place: Record<string, { host: string, site: string }> = { a1: { host: 'h1', site: 'A' }, b1: { host: 'h2', site: 'B' }, a2: { host: 'h3', site: 'A' }, b2: { host: 'h4', site: 'B' } }
    const paths = new PullPaths((s, tg) => pathCost(place[s], place[tg]))
    for (let block = 0; block < 3; block++) {
      t.same(paths.orders(['a2', 'b2'], ['a1', 'b1'], id), [['a1', 'b1'], ['b1', 'a1']], `block ${block}: each target pulls within its site, the far source as fallback`)
    }
    t.equal(pathCost(place.a1, { host: 'h1', site: 'A' }), 0)
    t.equal(pathCost(undefined, place.a1), 2)
  })
})

t.test('a relocation from 2 sources to 2 targets pulls over all 4 paths; every block equal after', { skip: fuseUnavailable() ?? false }, async (t) => {
  const zk = await startZk(t)
  const zkc = zk.connectString
  const [a1, a2] = await Promise.all(['a1', 'a2'].map(async id => await startNode(t, { zk, id, site: 'site-a' })))
  // One proxy per path b←a (no delay, no cap): it counts the bytes that path carried.
  const proxies = new Map<string, { bytes: () => number }>()
  const peerArgs = async (target: string): Promise<string[]> => {
    const args: string[] = []
    for (const source of [a1, a2]) {
      const p = await startWanProxy(t, { target: source.address, delayMs: 0 })
      proxies.set(`${source.id}→${target}`, { bytes: () => p.stats().bytesDown })
      args.push('--peer-address', `${source.id}=${p.address}`)
    }
    return args
  }
  const [b1, b2] = await Promise.all(['b1', 'b2'].map(async id => await startNode(t, { zk, id, site: 'site-b', extraArgs: await peerArgs(id) })))
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-controller', '--no-auto-repair'] })

  const made = await runCli(['disk', 'create', 'paths', '--size', `${DISK_BLOCKS}M`, '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,a2'], { zk: zkc })
  t.equal(made.code, 0, made.stderr)
  // Written through the mount; the handle stays open, so hv-a holds the lease and runs the copy.
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'paths'), 'r+')
  t.teardown(async () => { await fh.close().catch(() => undefined) })
  const model = randomBytes(rng(13), DISK_BLOCKS * MiB)
  await fh.write(model, 0, model.length, 0)
  await fh.sync()

  // --no-probe: the plan's link probe would pull the sample over the same paths.
  const res = await runCli(['relocate', 'paths', '--to', 'site-b', '--wait', '--no-probe'], { zk: zkc, timeoutMs: 120_000 })
  t.equal(res.code, 0, `relocate --wait: ${res.stdout}${res.stderr}`)
  const info = await cliJson<{ uuid: string, blocksPerSite: Record<string, number>, replicasPerNode: Record<string, unknown> }>(['disk', 'info', 'paths'], zkc)
  t.same(info.blocksPerSite, { 'site-b': DISK_BLOCKS }, 'the map holds only the site-B replicas')
  t.same(Object.keys(info.replicasPerNode).sort(), ['b1', 'b2'])

  // Each target pulled every block (16 MiB); over its 2 paths about evenly (8 MiB each).
  const carried = Object.fromEntries([...proxies].map(([k, p]) => [k, p.bytes()]))
  t.comment(`bytes per path: ${JSON.stringify(carried)}`)
  for (const [p, bytes] of Object.entries(carried)) t.ok(bytes >= DISK_BLOCKS * MiB / 4, `path ${p} carried ${(bytes / MiB).toFixed(1)} MiB: at least a quarter of its target's pulls`)

  for (const node of [b1, b2]) {
    const client = new StorageClient({ nodeId: node.id, address: node.address })
    try {
      const wrong: number[] = []
      for (let block = 0; block < DISK_BLOCKS; block++) {
        const newest = (await client.blockInfo({ diskUuid: info.uuid, block })).sort((x, y) => x.epoch - y.epoch).at(-1)
        const data = newest === undefined ? Buffer.alloc(0) : await client.read({ diskUuid: info.uuid, block, epoch: newest.epoch, offset: 0, length: MiB })
        if (sha256(data) !== sha256(model.subarray(block * MiB, (block + 1) * MiB))) wrong.push(block)
      }
      t.same(wrong, [], `every block on ${node.id} equal to the model (sha256 per block)`)
    } finally {
      await client.close()
    }
  }
  const back = Buffer.alloc(model.length)
  await fh.read(back, 0, back.length, 0)
  t.equal(sha256(back), sha256(model), 'and through the mount')
})
