// Shared pieces of the replica fault tests (hung, killed, failing-fsync replicas): per-block
// replica states read straight from ZooKeeper, a node's fsync count, and a timed writer that
// keeps a byte model of what was acknowledged.
import fs from 'node:fs'
import { MetaStore } from '../../src/meta/store'
import { StorageClient } from '../../src/storagenode/client'
import { randomBytes, rng } from './model'
import { processZkAuth } from '../../src/dev/process-zk-auth'

// Per block, the state of `node`'s replica ('in-sync' | 'syncing' | 'stale' | absent).
export async function replicaStates (zk: string, disk: string, node: string): Promise<Array<string | undefined>> {
  const meta = await MetaStore.connect(zk, { auth: processZkAuth() })
  try {
    const rec = await meta.getDisk(disk)
    const segs = await meta.loadPlacement(rec)
    const out: Array<string | undefined> = []
    for (const seg of segs) for (let b = seg.firstBlock; b < seg.firstBlock + seg.blockCount; b++) out.push(seg.replicas(b).find(r => r.node === node)?.state)
    return out
  } finally {
    await meta.close()
  }
}

// fsync calls the node made since it started (its Stat answer).
export async function fsyncCount (id: string, address: string): Promise<number> {
  const c = new StorageClient({ nodeId: id, address })
  try {
    return (await c.stat()).fsyncCount
  } finally {
    await c.close()
  }
}

export interface WriterStats {
  writes: number
  failures: number
  bytesWritten: number
  longestWriteMs: number
  // Blocks touched by writes that started at or after `markAtMs` (set by the caller).
  blocksAfterMark: Set<number>
}

// `writers` loops, each over its own slice of the file (so the model is exact with writes in
// flight together), writing random 4 KiB..256 KiB pieces until `stop()` says so. A write that
// fails leaves its range unknown (recorded in `unknown`).
export async function runWriters (opts: {
  fh: fs.promises.FileHandle, sizeBytes: number, blockSizeBytes: number, writers: number, seed: number,
  model: Buffer, unknown: Array<{ off: number, len: number }>, stop: () => boolean, markAtMs: () => number | null
}): Promise<WriterStats> {
  const stats: WriterStats = { writes: 0, failures: 0, bytesWritten: 0, longestWriteMs: 0, blocksAfterMark: new Set() }
  const slice = Math.floor(opts.sizeBytes / opts.writers)
  await Promise.all(Array.from({ length: opts.writers }, async (_, w) => {
    const rand = rng(opts.seed + w)
    while (!opts.stop()) {
      const len = 4096 * (1 + Math.floor(rand() * 64))
      const off = w * slice + 4096 * Math.floor(rand() * ((slice - len) / 4096))
      const data = randomBytes(rand, len)
      const started = Date.now()
      try {
        await opts.fh.write(data, 0, len, off)
        data.copy(opts.model, off)
        stats.writes++
        stats.bytesWritten += len
      } catch {
        stats.failures++
        opts.unknown.push({ off, len })
      }
      const tookMs = Date.now() - started
      stats.longestWriteMs = Math.max(stats.longestWriteMs, tookMs)
      const mark = opts.markAtMs()
      if (mark !== null && started >= mark) {
        for (let b = Math.floor(off / opts.blockSizeBytes); b <= Math.floor((off + len - 1) / opts.blockSizeBytes); b++) stats.blocksAfterMark.add(b)
      }
    }
  }))
  return stats
}

// Compares the file with the model outside ranges a failed write left unknown; returns the
// number of differing bytes and the first offset that differs.
export function diffAgainstModel (got: Buffer, model: Buffer, unknown: Array<{ off: number, len: number }>): { bytes: number, first: number } {
  const skip = new Uint8Array(model.length)
  for (const u of unknown) skip.fill(1, u.off, u.off + u.len)
  let bytes = 0
  let first = -1
  for (let i = 0; i < model.length; i++) {
    if (skip[i] === 0 && got[i] !== model[i]) { bytes++; if (first < 0) first = i }
  }
  return { bytes, first }
}
