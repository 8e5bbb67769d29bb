// The Io memory budget's rules without a server: arrival order per stream, the stream and node
// bounds, first come first served across streams, and release on close.
import t from 'tap'
import { Charge, NodeIoBudget, REPLY_MIN_BYTES, REQUESTS_PER_STREAM_MAX, StreamIoGate, chargeBytes } from '../src/storagenode/io-budget'

const MiB = 1024 * 1024

interface Probe { gate: StreamIoGate<string>, ran: string[], charges: Map<string, Charge>, reading: boolean[] }

function stream (node: NodeIoBudget): Probe {
  const p: Probe = { gate: undefined as unknown as StreamIoGate<string>, ran: [], charges: new Map(), reading: [] }
  p.gate = new StreamIoGate<string>(node, (item, charge) => { p.ran.push(item); p.charges.set(item, charge) }, r => p.reading.push(r))
  return p
}

t.test('a stream runs in arrival order within its budget and stops reading while write data waits', async t => {
  const node = new NodeIoBudget(64 * MiB, 16 * MiB)
  const s = stream(node)
  for (const x of ['a', 'b', 'c', 'd', 'e']) s.gate.push(x, 4 * MiB, 4 * MiB)
  t.same(s.ran, ['a', 'b', 'c', 'd'], 'four 4 MiB writes fill 16 MiB')
  t.same(s.reading, [false], 'the stream stops being read while e\'s 4 MiB wait')
  t.equal(node.stat().ioHeldBytes, 16 * MiB)
  s.gate.settle(s.charges.get('b') as Charge)
  t.same(s.ran, ['a', 'b', 'c', 'd', 'e'], 'a reply leaving lets the next one in')
  t.same(s.reading, [false, true], 'and reading resumes')
  s.gate.settle(s.charges.get('b') as Charge)
  t.equal(node.stat().ioHeldBytes, 16 * MiB, 'settling twice releases once')
})

t.test('waiting reads hold no data: the stream is read on up to the count bound', async t => {
  const node = new NodeIoBudget(64 * MiB, 16 * MiB)
  const s = stream(node)
  for (let i = 0; i < 32; i++) s.gate.push(`r${i}`, 4 * MiB, 0)
  t.equal(s.ran.length, 4, 'four 4 MiB reads run')
  t.same(s.reading, [], 'a window of 32 reads never pauses the stream')
  for (let i = 32; i < REQUESTS_PER_STREAM_MAX; i++) s.gate.push(`r${i}`, 4 * MiB, 0)
  t.same(s.reading, [false], 'at the count bound it does')
  for (const x of s.ran.slice()) s.gate.settle(s.charges.get(x) as Charge)
  t.same(s.ran.slice(0, 8), ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'], 'in arrival order')
})

t.test('streams wait for the node budget first come, first served', async t => {
  const node = new NodeIoBudget(32 * MiB, 16 * MiB)
  const a = stream(node)
  const b = stream(node)
  const c = stream(node)
  for (let i = 0; i < 4; i++) { a.gate.push(`a${i}`, 4 * MiB, 0); b.gate.push(`b${i}`, 4 * MiB, 0) }
  c.gate.push('c0', 4 * MiB, 0)
  a.gate.push('a4', 4 * MiB, 0)
  t.equal(node.stat().ioHeldBytes, 32 * MiB)
  t.same(c.ran, [], 'c waits for the node')
  t.equal(node.stat().ioWaitingStreams, 1)
  a.gate.settle(a.charges.get('a0') as Charge)
  t.same(c.ran, ['c0'], 'the freed bytes go to c, which waited first')
  t.same(a.ran, ['a0', 'a1', 'a2', 'a3'], 'not to a\'s later request')
  t.ok(node.stat().ioHeldPeakBytes <= 32 * MiB, 'never above the node budget')
})

t.test('closing a stream drops its queue and releases its charges', async t => {
  const node = new NodeIoBudget(16 * MiB, 16 * MiB)
  const a = stream(node)
  const b = stream(node)
  for (let i = 0; i < 6; i++) a.gate.push(`a${i}`, 4 * MiB, 0)
  b.gate.push('b0', 1 * MiB, 0)
  t.same(b.ran, [], 'b waits while a holds the node budget')
  await a.gate.close()
  t.same(b.ran, ['b0'], 'a\'s release lets b in')
  t.equal(node.stat().ioHeldBytes, chargeBytes(1 * MiB, 16 * MiB))
  t.equal(a.gate.pending, 0, 'a keeps nothing queued')
  a.gate.push('late', 4 * MiB, 0)
  t.same(a.ran, ['a0', 'a1', 'a2', 'a3'], 'a closed stream runs nothing more')
  a.gate.settle(a.charges.get('a0') as Charge)
  t.equal(node.stat().ioHeldBytes, chargeBytes(1 * MiB, 16 * MiB), 'a late settle does not release twice')
})

t.test('charges: at least REPLY_MIN_BYTES, at most the stream budget; a count bound too', async t => {
  t.equal(chargeBytes(0, 16 * MiB), REPLY_MIN_BYTES)
  t.equal(chargeBytes(4 * 1024 ** 3, 16 * MiB), 16 * MiB, 'a bogus 4 GiB read cannot wait for ever')
  const node = new NodeIoBudget(64 * MiB, 16 * MiB)
  const s = stream(node)
  for (let i = 0; i < REQUESTS_PER_STREAM_MAX + 1; i++) s.gate.push(`f${i}`, 0, 0)
  t.equal(s.ran.length, REQUESTS_PER_STREAM_MAX, 'empty requests are bounded by count')
  t.throws(() => new NodeIoBudget(64 * MiB, 1 * MiB), { code: 'BAD_ARGUMENT' }, 'a stream budget below one request is refused')
})
