// Trailing writes in the data path alone (src/vdisk/data-path.ts mutateBlockLocked), with fake
// nodes whose answers the test gives by hand: a1 in sync, a2 syncing (a relocation's target).
// - the guest's write is acknowledged once a1 answered, and counted as a change then; a2's
//   request carries its own copy of the data (the guest's buffer may be reused after the
//   answer); the blocks' copy locks, a quiesce and trailingDrained() wait until a2 answered;
// - a2 failing at once, before a1 answered (a hung node's client fails a request without
//   sending it): no rejection left unhandled — on the first version of the branch this one ended
//   the agent (test/relocate-target-stale.test.ts lost its mount, ECONNABORTED) — and a2 is
//   marked stale for the block before the block is let go.
import t from 'tap'
import { UkaiError } from '../src/errors'
import { BlockLocks } from '../src/lib/block-locks'
import { silentLogger } from '../src/log'
import { withState, type ReplicaSet } from '../src/meta/placement'
import { DiskDataPath, type DiskDataPathDeps } from '../src/vdisk/data-path'

interface Request { node: string, data: Buffer, answer: () => void, fail: (err: Error) => void }

const BLOCK = 64 * 1024

function fakeDisk (): { dp: DiskDataPath, locks: BlockLocks, requests: Request[], stale: Array<{ node: string, blocks: number[] }> } {
  let set: ReplicaSet = [{ node: 'a1', state: 'in-sync' }, { node: 'a2', state: 'syncing' }]
  const requests: Request[] = []
  const stale: Array<{ node: string, blocks: number[] }> = []
  const locks = new BlockLocks()
  const markStale = async (node: string, blocks: number[]): Promise<void> => {
    stale.push({ node, blocks })
    set = withState(set, node, 'stale')
  }
  const deps = {
    name: 'd',
    pool: {
      client: (node: string) => ({
        write: async (req: { data: Buffer }) => await new Promise<string>((resolve, reject) => {
          requests.push({ node, data: req.data, answer: () => resolve('inc-1'), fail: reject })
        })
      }),
      isHung: () => false
    },
    map: { replicasOf: () => set, markStale, markHungNodeStale: markStale },
    blockLocks: locks,
    flusher: { note: () => {} },
    throttle: { admit: () => undefined },
    io: { readBytes: 0, writeBytes: 0 },
    local: undefined,
    materialized: new Set<number>(),
    ioRetryMs: 1_000,
    signal: new AbortController().signal,
    log: silentLogger,
    record: () => ({ uuid: 'u', epoch: 1, sizeBytes: 4 * BLOCK, blockSizeBytes: BLOCK }),
    chain: () => null,
    holdsLease: () => true,
    ensureLease: async () => ({ leaseEpoch: 1 }),
    onFenced: () => {},
    onStale: () => {}
  } as unknown as DiskDataPathDeps
  return { dp: new DiskDataPath(deps), locks, requests, stale }
}

const turns = async (n = 5): Promise<void> => { for (let i = 0; i < n; i++) await new Promise(resolve => setImmediate(resolve)) }
const state = (p: Promise<unknown>): { done: boolean } => { const s = { done: false }; void p.then(() => { s.done = true }); return s }

t.test('acknowledged once the in-sync replica answered; the syncing one trails with its own copy, holding the block', async (t) => {
  const { dp, locks, requests, stale } = fakeDisk()
  const data = Buffer.alloc(4096, 7)
  const before = dp.mutations
  const write = state(dp.write(100, data))
  await turns()
  t.same(requests.map(r => r.node).sort(), ['a1', 'a2'], 'sent to both replicas')
  const a1 = requests.find(r => r.node === 'a1') as Request
  const a2 = requests.find(r => r.node === 'a2') as Request
  a1.answer()
  await turns()
  t.ok(write.done, 'the write is acknowledged while a2 has not answered')
  t.ok(dp.mutations > before, 'counted as a change at its acknowledgement (allocation answers cached before are dropped)')
  data.fill(0)  // the guest's buffer reused after the answer
  t.ok(a2.data.length === 4096 && a2.data.every(b => b === 7), 'a2\'s request has its own copy: still the bytes written')
  const copy = state(locks.withCopies([1, 0], async () => {}))
  const quiesced = state(dp.quiesce())
  const drained = state(dp.trailingDrained())
  await turns()
  t.notOk(copy.done || quiesced.done || drained.done, 'the copy lock, a quiesce and trailingDrained wait for a2')
  a2.answer()
  await turns()
  t.ok(copy.done && quiesced.done && drained.done, 'and go on once a2 answered')
  t.same(stale, [], 'nothing marked stale')
})

t.test('a syncing replica that fails before the in-sync one answered: nothing unhandled, marked stale before the block is let go', async (t) => {
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown): void => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
  const { dp, locks, requests, stale } = fakeDisk()
  const write = dp.write(0, Buffer.alloc(4096, 1))
  await turns()
  const a1 = requests.find(r => r.node === 'a1') as Request
  const a2 = requests.find(r => r.node === 'a2') as Request
  a2.fail(UkaiError.unavailable('a2 is hung'))
  await new Promise(resolve => setTimeout(resolve, 20))  // an unhandled rejection is reported by now
  const copy = state(locks.withCopy(0, async () => { t.same(stale, [{ node: 'a2', blocks: [0] }], 'a2 stale before the copy lock is had') }))
  a1.answer()
  await write
  await dp.trailingDrained()
  await turns()
  t.ok(copy.done, 'the copy lock is had once the write is done')
  t.same(stale, [{ node: 'a2', blocks: [0] }], 'a2 marked stale for the block')
  t.same(unhandled.map(String), [], 'no rejection left unhandled')
})
