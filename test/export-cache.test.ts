// The committed-block cache: LRU within its byte bound, checksummed entries, adoption after a
// restart, keyed by the version returned (not the snapshot asked for); and end to end, a far node
// behind a WAN proxy: the second read of a snapshot block is served locally (no bytes through the
// proxy), while head reads never come from the cache.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { CACHE_CHUNK_BYTES, CommittedCache } from '../src/vdisk/committed-cache'
import { CommittedSource, cachedCommittedRead } from '../src/vdisk/cached-epoch-read'
import { fuseUnavailable, makeTempDir, missingCli, startAgent, startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { snapshot, writeThroughMount } from './helpers/export'
import { randomBytes, rng, sha256 } from './helpers/model'
import { startWanProxy } from './helpers/wan'

const MiB = 1024 * 1024
const chunk = (fill: number): Buffer => Buffer.alloc(CACHE_CHUNK_BYTES, fill)

t.test('LRU within the byte bound, checksums, adoption', async (t) => {
  const dir = makeTempDir(t, 'cache')
  const cache = await CommittedCache.open({ dir, maxBytes: 3 * CACHE_CHUNK_BYTES })
  await cache.put('u1', 0, 2, 0, chunk(1))
  await cache.put('u1', 1, 2, 0, chunk(2))
  await cache.put('u1', 2, 2, 0, chunk(3))
  t.same((await cache.get('u1', 0, 2, 0))?.[0], 1, 'hit; block 0 is now the most recently used')
  await cache.put('u1', 3, 2, 0, chunk(4))
  t.equal(await cache.get('u1', 1, 2, 0), null, 'the least recently used entry (block 1) was evicted')
  t.ok(await cache.get('u1', 0, 2, 0) !== null, 'block 0 stayed')
  t.ok(cache.stats().bytes <= 3 * CACHE_CHUNK_BYTES, `bytes ${cache.stats().bytes} within the bound`)
  t.equal(await cache.get('u1', 0, 3, 0), null, 'another epoch is another version: a miss')
  // A damaged entry is dropped, not served.
  const file = path.join(dir, 'u1', '2.2.0')
  const raw = await fs.promises.readFile(file)
  raw[10] ^= 0xff
  await fs.promises.writeFile(file, raw)
  t.equal(await cache.get('u1', 2, 2, 0), null, 'an entry that fails its CRC is a miss')
  t.notOk(fs.existsSync(file), 'and is removed')
  // A restart adopts what is on disk, within the bound; a leftover temp file is removed.
  await fs.promises.writeFile(path.join(dir, 'u1', '.tmp-1-1'), 'torn')
  const again = await CommittedCache.open({ dir, maxBytes: 3 * CACHE_CHUNK_BYTES })
  t.equal(again.stats().entries, 2, 'two entries adopted')
  t.equal((await again.get('u1', 3, 2, 0))?.[0], 4)
  t.notOk(fs.existsSync(path.join(dir, 'u1', '.tmp-1-1')))
  await t.rejects(CommittedCache.open({ dir, maxBytes: 1000 }), /too small/)
})

t.test('read-through: keyed by the version returned, shared by snapshots, fetched once', async (t) => {
  const dir = makeTempDir(t, 'cache-rt')
  const cache = await CommittedCache.open({ dir, maxBytes: 16 * MiB })
  // Block 0 has versions at epochs 2 and 5; block 1 none.
  const versions: Record<number, number[]> = { 0: [2, 5], 1: [] }
  const content = (epoch: number): Buffer => Buffer.alloc(2 * MiB, epoch)
  const fetched: string[] = []
  const src = (epoch: number): CommittedSource => ({
    record: { uuid: 'disk-u', blockSizeBytes: 2 * MiB },
    epoch,
    sizeBytes: 4 * MiB,
    versionsOf: async (block) => versions[block],
    readFromNodes: async (block, e, off, len) => { fetched.push(`${block}@${e}+${off}`); return content(e).subarray(off, off + len) }
  })
  const r3 = await cachedCommittedRead(cache, src(3), 0, 100, 10, false)
  t.same([...(r3 as Buffer)], Array(10).fill(2), 'snapshot 3 reads version 2')
  const r4 = await cachedCommittedRead(cache, src(4), 0, CACHE_CHUNK_BYTES - 5, 10, false)
  t.same([...(r4 as Buffer)], Array(10).fill(2), 'snapshot 4 reads version 2 too, across two cache lines')
  const r6 = await cachedCommittedRead(cache, src(6), 0, 0, 4, false)
  t.same([...(r6 as Buffer)], [5, 5, 5, 5], 'snapshot 6 reads version 5, never the cached version 2')
  t.same(fetched, ['0@2+0', '0@2+1048576', '0@5+0'], 'each version\'s cache line was fetched once, at the version\'s epoch')
  t.equal(await cachedCommittedRead(cache, src(6), 1, 0, 4, true), null, 'no version: absent (a clone reads its parent)')
  t.same([...(await cachedCommittedRead(cache, src(6), 1, 0, 4, false) as Buffer)], [0, 0, 0, 0], 'or zeros')
})

const e2eSkip = fuseUnavailable() ?? missingCli('snapshot')
t.test('end to end: a far node behind a WAN proxy', { skip: e2eSkip ?? false }, async (t) => {
  const zk = await startZk(t)
  const far = await startNode(t, { zk, id: 'b1', site: 'site-b' })
  const wan = await startWanProxy(t, { target: far.address, delayMs: 20 })
  const dir = makeTempDir(t, 'agent-cache')
  const cacheDir = path.join(dir, 'cache')
  // No round-trip probes during the test: every byte through the proxy is then data.
  const agent = await startAgent(t, {
    zk, host: 'hv-a', site: 'site-a',
    extraArgs: ['--node-address', `b1=${wan.address}`, '--cache-dir', cacheDir, '--cache-size', '64M', '--rtt-interval-ms', '600000']
  })
  const z = zk.connectString
  t.equal((await runCli(['disk', 'create', 'vm', '--size', '8M', '--block-size', '1M', '--nodes', 'b1'], { zk: z })).code, 0)
  const rand = rng(7)
  const model = Buffer.alloc(8 * MiB)
  await writeThroughMount(agent.mountPoint, 'vm', model, [{ offset: 0, data: randomBytes(rand, 3 * MiB) }])
  await snapshot(z, 'vm@s1')
  const s1 = Buffer.from(model)
  await writeThroughMount(agent.mountPoint, 'vm', model, [{ offset: 0, data: randomBytes(rand, MiB) }])

  const snapFile = path.join(agent.mountPoint, '.snapshots', 'vm@s1')
  const readRange = async (file: string, offset: number, length: number): Promise<Buffer> => {
    const fh = await fs.promises.open(file, 'r')
    try {
      const b = Buffer.alloc(length)
      const { bytesRead } = await fh.read(b, 0, length, offset)
      return b.subarray(0, bytesRead)
    } finally {
      await fh.close()
    }
  }
  const down0 = wan.stats().bytesDown
  const first = await readRange(snapFile, 0, 2 * MiB)
  const down1 = wan.stats().bytesDown
  t.equal(sha256(first), sha256(s1.subarray(0, 2 * MiB)), 'first read of the snapshot equals the model at s1')
  t.ok(down1 - down0 >= 2 * MiB, `first read came through the proxy (${down1 - down0} bytes)`)
  const startedMs = Date.now()
  const second = await readRange(snapFile, 0, 2 * MiB)
  const down2 = wan.stats().bytesDown
  t.equal(sha256(second), sha256(s1.subarray(0, 2 * MiB)), 'second read equals the model')
  t.ok(down2 - down1 < 1024, `second read is local: ${down2 - down1} bytes through the proxy`)
  t.comment(`second read took ${Date.now() - startedMs} ms`)
  // Head reads never come from the cache: block 0 changed after s1.
  const head = await readRange(path.join(agent.mountPoint, 'vm'), 0, MiB)
  t.equal(sha256(head), sha256(model.subarray(0, MiB)), 'the head reads its own (newer) bytes')
  t.ok(wan.stats().bytesDown - down2 >= MiB, 'and they came from the node')
  const files = (await fs.promises.readdir(cacheDir, { recursive: true })).filter(f => /\d+\.\d+\.\d+$/.test(String(f)))
  t.equal(files.length, 2, `two cache lines on disk (${files.join(', ')})`)
})
