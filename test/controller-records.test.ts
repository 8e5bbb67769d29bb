// The controller's own inputs: a relocation record read back from ZooKeeper is checked field by
// field (checkRelocationRecord in src/meta/schema.ts) before any duty acts on it, so a damaged
// one is refused with the field named instead of crashing an executor (the end-to-end case, a
// corrupt record logged once and skipped by a running controller, is in
// test/controller-election.test.ts). Also the election znode's name: the sequence ZooKeeper
// appends decides who leads, and a name that is not ours never leads.
import t from 'tap'
import { RelocationRecord, candidatePrefix, candidateSequence, checkRelocationRecord, decodeJson } from '../src/meta/schema'

const good: RelocationRecord = {
  v: 1, id: 'r1', disk: 'vm1', targetNodes: ['b1', 'b2'], dropNodes: ['a1', 'a2'], addedNodes: ['b1', 'b2'], rateBytesPerSec: 0,
  state: 'copying', reason: '', executor: '', plan: { blocks: 4, writtenBlocks: 4, bytes: 4096 },
  progress: { blocks: 0, bytes: 0, updatedAtMs: 1 }, createdAtMs: 1, finishedAtMs: 0
}

t.test('a good record passes unchanged', async t => {
  t.same(checkRelocationRecord({ ...good }, 'vm1'), good)
  t.same(checkRelocationRecord({ ...good, placement: { site: 'b' } }, 'vm1').placement, { site: 'b' })
})

t.test('every kind of damage is refused with the field named', async t => {
  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['no id', { id: undefined }, /no id/],
    ['another disk', { disk: 'vm2' }, /names disk 'vm2'/],
    ['targets a string', { targetNodes: 'b1' }, /targetNodes/],
    ['no targets', { targetNodes: [] }, /targetNodes/],
    ['a bad node id', { targetNodes: ['b1', '../x'] }, /targetNodes/],
    ['drop not a list', { dropNodes: null }, /dropNodes/],
    ['added not a list', { addedNodes: 3 }, /addedNodes/],
    ['unknown state', { state: 'exploding' }, /unknown state 'exploding'/],
    ['negative rate', { rateBytesPerSec: -1 }, /rateBytesPerSec/],
    ['reason a number', { reason: 5 }, /reason or executor/],
    ['plan missing', { plan: undefined }, /plan is not/],
    ['progress bytes a string', { progress: { blocks: 0, bytes: '0', updatedAtMs: 1 } }, /progress is not/],
    ['created NaN', { createdAtMs: Number.NaN }, /createdAtMs/]
  ]
  for (const [what, patch, re] of bad) {
    t.throws(() => checkRelocationRecord({ ...good, ...patch } as unknown as RelocationRecord, 'vm1'), { code: 'INTERNAL', message: re }, what)
    t.throws(() => checkRelocationRecord({ ...good, ...patch } as unknown as RelocationRecord, 'vm1'), { message: /corrupt relocation record of disk 'vm1' in ZooKeeper/ }, `${what}: names the disk`)
  }
  t.throws(() => decodeJson(Buffer.from('{"v":1,'), 'relocation of vm1'), { code: 'INTERNAL', message: /corrupt relocation of vm1 in ZooKeeper: not JSON/ }, 'not JSON')
  t.throws(() => decodeJson(Buffer.from('{"v":2}'), 'relocation of vm1'), { message: /format version 2/ }, 'a newer format')
})

t.test('election znode names', async t => {
  t.equal(candidateSequence(`${candidatePrefix('0100015c1f800005')}0000000012`), 12)
  t.equal(candidateSequence('stranger'), Number.MAX_SAFE_INTEGER, 'a name without a sequence never leads')
  t.equal(candidateSequence('x-n_12abc'), Number.MAX_SAFE_INTEGER, 'nor one with a mangled sequence')
})
