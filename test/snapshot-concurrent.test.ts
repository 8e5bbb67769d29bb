// Snapshots while writers keep writing through the mount. Each writer writes 4 KiB slots of its
// own in sequence, recording when each write started and was acknowledged; the CLI's start and
// end bracket the commit. Model check for every snapshot: it holds exactly a prefix of each
// writer's writes; every write acknowledged before the commit began is in it; no write started
// after the commit ended is; and a write in it implies every write acknowledged before that one
// started is in it too (nothing acknowledged earlier is missing).
import fs from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'

const KiB = 1024
const MiB = 1024 * KiB
const SLOT = 4 * KiB
const WRITERS = 4
const SLOTS_PER_WRITER = 4096
const SIZE = WRITERS * SLOTS_PER_WRITER * SLOT  // 64 MiB
const SNAPSHOTS = 3

interface Write { start: number, ack: number }

function slotData (writer: number, seq: number): Buffer {
  const b = Buffer.alloc(SLOT)
  for (let i = 0; i < SLOT; i += 8) { b.writeUInt32LE(writer + 1, i); b.writeUInt32LE(seq + 1, i + 4) }
  return b
}

t.test('snapshot under concurrent writes holds exactly what was acknowledged before the commit', async (t) => {
  const c = await startCluster(t, { sites: 1, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const r = await runCli(['disk', 'create', 'busy', '--size', String(SIZE), '--block-size', '256K'], { zk })
  t.equal(r.code, 0, r.stderr)
  const file = path.join(a.mountPoint, 'busy')
  const writes: Write[][] = Array.from({ length: WRITERS }, () => [])
  let stop = false
  const writers = Array.from({ length: WRITERS }, async (_, w) => {
    const fh = await fs.promises.open(file, 'r+')
    try {
      for (let seq = 0; seq < SLOTS_PER_WRITER && !stop; seq++) {
        const data = slotData(w, seq)
        const start = performance.now()
        await fh.write(data, 0, SLOT, (w * SLOTS_PER_WRITER + seq) * SLOT)
        writes[w].push({ start, ack: performance.now() })
      }
    } finally {
      await fh.close()
    }
  })
  const commits: Array<{ name: string, begin: number, end: number, done: number[] }> = []
  try {
    await new Promise(resolve => setTimeout(resolve, 500))
    for (let i = 0; i < SNAPSHOTS; i++) {
      const begin = performance.now()
      const res = await runCli(['snapshot', 'create', `busy@s${i}`], { zk })
      const end = performance.now()
      t.equal(res.code, 0, res.stderr)
      commits.push({ name: `s${i}`, begin, end, done: writes.map(ws => ws.length) })
    }
  } finally {
    stop = true
    await Promise.all(writers)
  }
  t.comment(`writes per writer: ${writes.map(w => w.length).join(', ')}`)

  for (const commit of commits) {
    const image = await fs.promises.readFile(path.join(a.mountPoint, '.snapshots', `busy@${commit.name}`))
    t.equal(image.length, SIZE)
    const included: number[] = []  // per writer: how many of its writes the snapshot holds
    let malformed = 0
    for (let w = 0; w < WRITERS; w++) {
      let k = 0
      while (k < writes[w].length && image.subarray((w * SLOTS_PER_WRITER + k) * SLOT, (w * SLOTS_PER_WRITER + k + 1) * SLOT).equals(slotData(w, k))) k++
      // Everything after the prefix must still be zeros (never written as of the snapshot).
      for (let s = k; s < SLOTS_PER_WRITER; s++) {
        const slot = image.subarray((w * SLOTS_PER_WRITER + s) * SLOT, (w * SLOTS_PER_WRITER + s + 1) * SLOT)
        if (!slot.every(x => x === 0)) malformed++
      }
      included.push(k)
    }
    t.equal(malformed, 0, `${commit.name}: each writer's writes in the snapshot form a prefix, the rest is zeros`)
    const ackedBefore = writes.map(ws => ws.filter(x => x.ack < commit.begin).length)
    const startedAfter = writes.map(ws => ws.findIndex(x => x.start > commit.end))
    for (let w = 0; w < WRITERS; w++) {
      t.ok(included[w] >= ackedBefore[w], `${commit.name} writer ${w}: holds all ${ackedBefore[w]} writes acknowledged before the commit began (holds ${included[w]})`)
      if (startedAfter[w] >= 0) t.ok(included[w] <= startedAfter[w], `${commit.name} writer ${w}: holds no write started after the commit ended (${included[w]} ≤ ${startedAfter[w]})`)
    }
    // Causality across writers: if write k-1 of writer w is in, every write acknowledged before it started is in.
    let violations = 0
    for (let w = 0; w < WRITERS; w++) {
      if (included[w] === 0) continue
      const last = writes[w][included[w] - 1]
      for (let v = 0; v < WRITERS; v++) violations += writes[v].filter((x, i) => x.ack < last.start && i >= included[v]).length
    }
    t.equal(violations, 0, `${commit.name}: no write acknowledged before an included write is missing`)
    t.comment(`${commit.name}: holds ${included.join(', ')}; acked before commit ${ackedBefore.join(', ')}; commit took ${(commit.end - commit.begin).toFixed(0)} ms (CLI)`)
  }
  t.ok(commits.some((cm, i) => i > 0 && writes.some(ws => ws.some(x => x.start > commits[0].end && x.ack < cm.begin))), 'writers kept writing between commits')
  // The head holds every write.
  const head = await fs.promises.readFile(file)
  let headBad = 0
  for (let w = 0; w < WRITERS; w++) for (let k = 0; k < writes[w].length; k++) if (!head.subarray((w * SLOTS_PER_WRITER + k) * SLOT, (w * SLOTS_PER_WRITER + k + 1) * SLOT).equals(slotData(w, k))) headBad++
  t.equal(headBad, 0, 'the head holds every acknowledged write')
  t.ok(SIZE >= 64 * MiB)
})
