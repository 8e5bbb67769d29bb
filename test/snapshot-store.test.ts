// The node side of snapshots and clones on a real temp dir: the garbage-collection rule of
// PruneVersions (against a brute-force model of "newest version <= a kept epoch"), rollback's
// drop_newer, its fencing, absent reads for clones, and the local copy-on-write of CopyBase.
import t from 'tap'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { BlockStore } from '../src/storagenode/block-store'
import { rng } from './helpers/model'

const DISK = 'disk-0001'
const CLONE = 'clone-0001'

async function openStore (t: { teardown: (fn: () => void | Promise<void>) => void }): Promise<BlockStore> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-snapstore-'))
  const store = await BlockStore.open({ nodeId: 'n1', dataDir: dir })
  t.teardown(async () => { await store.close(); fs.rmSync(dir, { recursive: true, force: true }) })
  return store
}

function newestAtMost (epochs: number[], k: number): number | undefined {
  return epochs.filter(e => e <= k).sort((a, b) => b - a)[0]
}

t.test('PruneVersions keeps exactly the versions a kept epoch reads', async (t) => {
  const seed = Date.now() >>> 0
  t.comment(`seed ${seed}`)
  const rand = rng(seed)
  for (let round = 0; round < 20; round++) {
    const store = await openStore(t)
    const written = new Map<number, number[]>()  // block → epochs written
    const content = new Map<string, Buffer>()    // 'block.epoch' → what that version reads as
    for (let block = 0; block < 8; block++) {
      const epochs = [...new Set(Array.from({ length: 1 + Math.floor(rand() * 5) }, () => 1 + Math.floor(rand() * 10)))].sort((a, b) => a - b)
      written.set(block, epochs)
      for (const e of epochs) {
        const data = Buffer.alloc(4096, (block * 16 + e) & 0xff)
        await store.write(DISK, block, e, 0, data, 1)
        content.set(`${block}.${e}`, data)
      }
    }
    const keep = [...new Set(Array.from({ length: 1 + Math.floor(rand() * 3) }, () => 1 + Math.floor(rand() * 10)))]
    const before = new Map(store.listBlocks(DISK).map(b => [b.block, b.epochs]))
    await store.pruneVersions(DISK, keep, false)
    const after = new Map(store.listBlocks(DISK).map(b => [b.block, b.epochs]))
    const maxKeep = Math.max(...keep)
    for (const [block, epochs] of before) {
      const needed = new Set(keep.map(k => newestAtMost(epochs, k)).filter((e): e is number => e !== undefined))
      const expected = epochs.filter(e => needed.has(e) || e > maxKeep)
      t.same(after.get(block) ?? [], expected, `round ${round} block ${block}: ${epochs} keep ${keep}`)
      // Every kept epoch still reads what it read before.
      for (const k of keep) {
        const v = newestAtMost(epochs, k)
        const got = await store.read(DISK, block, k, 0, 4096)
        t.ok(got.equals(v === undefined ? Buffer.alloc(4096) : content.get(`${block}.${v}`) as Buffer), `round ${round} block ${block} epoch ${k} reads the same`)
      }
    }
  }
})

t.test('rollback (drop_newer) returns every block to the snapshot, fenced by the lease epoch', async (t) => {
  const store = await openStore(t)
  await store.write(DISK, 0, 1, 0, Buffer.alloc(4096, 1), 5)
  await store.write(DISK, 0, 3, 0, Buffer.alloc(4096, 3), 5)
  await store.write(DISK, 1, 4, 0, Buffer.alloc(4096, 4), 5)
  await t.rejects(store.pruneVersions(DISK, [2], true, 4), { code: 'FENCED' }, 'an older lease epoch is refused')
  t.same(store.listBlocks(DISK).map(b => b.epochs), [[1, 3], [4]], 'nothing dropped when fenced')
  const r = await store.pruneVersions(DISK, [2], true, 5)
  t.equal(r.versionsRemoved, 2)
  t.same(store.listBlocks(DISK), [{ block: 0, epochs: [1] }], 'only what epoch 2 reads remains')
  t.ok((await store.read(DISK, 0, 9, 0, 4096)).equals(Buffer.alloc(4096, 1)), 'the head reads the snapshot')
  t.ok((await store.read(DISK, 1, 9, 0, 4096)).equals(Buffer.alloc(4096)), 'a block written after it reads as zeros')
})

t.test('clone blocks: absent reads and local copy-on-write', async (t) => {
  const store = await openStore(t)
  await store.write(DISK, 2, 1, 0, Buffer.alloc(8192, 7), 1)
  await store.write(DISK, 2, 3, 0, Buffer.alloc(4096, 9), 1)
  await t.rejects(store.read(CLONE, 2, 1, 0, 10, true), { code: 'NOT_FOUND' }, 'absent block of a clone is NOT_FOUND when asked')
  t.ok((await store.read(CLONE, 2, 1, 0, 10)).equals(Buffer.alloc(10)), 'and zeros otherwise')
  t.equal(await store.copyBase(CLONE, 3, 1, DISK, 2, 1), 'absent', 'the base never wrote block 3')
  t.equal(await store.copyBase(CLONE, 2, 1, DISK, 2, 1), 'copied', 'copies the base version <= 2 (epoch 1)')
  t.equal(await store.copyBase(CLONE, 2, 1, DISK, 2, 1), 'present', 'a second copy does nothing')
  t.ok((await store.read(CLONE, 2, 1, 0, 8192, true)).equals(Buffer.alloc(8192, 7)), 'the clone holds the epoch-1 bytes')
  await store.write(CLONE, 2, 1, 0, Buffer.alloc(100, 1), 1)
  t.ok((await store.read(DISK, 2, 2, 0, 8192)).equals(Buffer.alloc(8192, 7)), 'the base version is untouched by the clone\'s write')
})
