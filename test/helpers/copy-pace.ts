// What the copy-pace tests share (test/relocate-copy-pace.test.ts, test/controller-repair-pace.test.ts):
// a guest that keeps writing through the mount (the signal the pace reads: the agent's write p99
// per node), a disk whose every block a2 missed, a sampler of a disk's relocation record, the
// rate between two samples, and each block's newest version as a node stores it.
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { RelocationRecord } from '../../src/meta/schema'
import { MetaStore } from '../../src/meta/store'
import { FAULT_WRITE_DELAY_MS_FILE_ENV } from '../../src/storagenode/write-delay-fault'
import { cliJson, runCli } from './cli'
import { makeTempDir, startAgent, startNode, startZk, type NodeFixture, type TestLike } from './cluster'
import { versionFiles } from './node-files'
import { until } from './until'

export function sha (b: Buffer): string { return crypto.createHash('sha256').update(b).digest('hex') }

// A disk on a1,a2 (256 KiB blocks) that a2 missed whole: a2 stopped, `bytes` of random data
// written and synced through the mount, a2 started again by `restartA2` (the caller's way: with
// or without a fault armed) and seen alive. Its file stays open (closed at teardown).
export async function diskMissedByA2 (t: TestLike & { equal: (a: unknown, b: unknown) => void }, opts: { zk: string, mountPoint: string, name: string, bytes: number, a2: { stop: () => Promise<void> }, restartA2: () => Promise<void> }): Promise<{ file: string, fh: fs.promises.FileHandle, model: Buffer }> {
  t.equal((await runCli(['disk', 'create', opts.name, '--size', `${opts.bytes / (1024 * 1024)}M`, '--block-size', '256K', '--nodes', 'a1,a2'], { zk: opts.zk })).code, 0)
  const file = path.join(opts.mountPoint, opts.name)
  const fh = await fs.promises.open(file, 'r+')
  t.teardown(() => fh.close().catch(() => {}))
  const model = crypto.randomBytes(opts.bytes)
  await opts.a2.stop()
  for (let off = 0; off < opts.bytes; off += 128 * 1024) await fh.write(model, off, 128 * 1024, off)
  await fh.sync()
  await opts.restartA2()
  await until('a2 is back', async () => {
    const nodes = await cliJson<Array<{ id: string, alive: unknown }>>(['node', 'list'], opts.zk)
    return nodes.find(n => n.id === 'a2')?.alive != null
  }, 30_000, 250)
  return { file, fh, model }
}

// Writes of 4-64 KiB at random places of an open disk file, one at a time, every 20 ms, into
// `model` too; stop() waits for the one in flight.
export function startGuestWriter (fh: fs.promises.FileHandle, model: Buffer): { latencies: Array<{ atMs: number, ms: number }>, stop: () => Promise<void> } {
  let writing = true
  const latencies: Array<{ atMs: number, ms: number }> = []
  const done = (async () => {
    let seed = 1
    const rand = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
    while (writing) {
      const len = 4096 * (1 + Math.floor(rand() * 16))
      const off = 4096 * Math.floor(rand() * ((model.length - len) / 4096))
      const data = crypto.randomBytes(len)
      const t0 = performance.now()
      await fh.write(data, 0, len, off)
      latencies.push({ atMs: Date.now(), ms: performance.now() - t0 })
      data.copy(model, off)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  })()
  return { latencies, stop: async () => { writing = false; await done } }
}

export interface Sample { atMs: number, bytes: number, rec: RelocationRecord }

// The disk's relocation record every 200 ms while it is copying; stops by itself once the
// session is gone (a failed test tore it down).
export function sampleRelocation (meta: MetaStore, disk: string): { samples: Sample[], stop: () => Promise<void> } {
  const samples: Sample[] = []
  let sampling = true
  const done = (async () => {
    while (sampling) {
      const rec = await meta.getRelocation(disk).catch(() => { sampling = false; return null })
      if (rec !== null && rec.state === 'copying') samples.push({ atMs: Date.now(), bytes: rec.progress.bytes, rec })
      await new Promise(resolve => setTimeout(resolve, 200))
    }
  })()
  return { samples, stop: async () => { sampling = false; await done } }
}

// Bytes per second copied between the samples nearest to `fromMs` and `toMs`.
export function rateBetween (samples: Sample[], fromMs: number, toMs: number): number {
  const a = samples.find(s => s.atMs >= fromMs)
  const b = [...samples].reverse().find(s => s.atMs <= toMs)
  if (a === undefined || b === undefined || b.atMs <= a.atMs) return NaN
  return (b.bytes - a.bytes) * 1000 / (b.atMs - a.atMs)
}

// block → sha256 of its newest version on a node.
export function newestVersions (dataDir: string, uuid: string): Map<string, string> {
  const out = new Map<string, string>()
  const files = versionFiles(dataDir, uuid).sort((x, y) => Number(x.split('.')[1]) - Number(y.split('.')[1]))
  for (const f of files) out.set(f.split('.')[0], sha(fs.readFileSync(path.join(dataDir, 'disks', uuid, f))))
  return out
}

// ZooKeeper, a1, a2 and an agent (no controller, no auto-repair), a2's process — also after a
// restart — running the node's write-delay fault from `faultFile` (off while it holds 0), and a
// disk `name` a2 missed whole (diskMissedByA2): the start of the repair-under-writes tests.
export async function a2SlowRepairSetup (t: TestLike & { equal: (a: unknown, b: unknown) => void }, opts: { name: string, bytes: number }): Promise<{ zk: string, faultFile: string, a1: NodeFixture, a2: NodeFixture, file: string, fh: fs.promises.FileHandle, model: Buffer }> {
  const zkf = await startZk(t)
  const zk = zkf.connectString
  const faultFile = path.join(makeTempDir(t, 'fault'), 'a2-write-delay-ms')
  fs.writeFileSync(faultFile, '0')
  const withFault = async <T>(fn: () => Promise<T>): Promise<T> => {
    process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] = faultFile
    try { return await fn() } finally { delete process.env[FAULT_WRITE_DELAY_MS_FILE_ENV] }
  }
  const a1 = await startNode(t, { zk: zkf, id: 'a1', site: 'site-a' })
  const a2 = await withFault(async () => await startNode(t, { zk: zkf, id: 'a2', site: 'site-a' }))
  const agent = await startAgent(t, { zk: zkf, host: 'hv1', site: 'site-a', extraArgs: ['--no-controller', '--no-auto-repair'] })
  const { file, fh, model } = await diskMissedByA2(t, { zk, mountPoint: agent.mountPoint, name: opts.name, bytes: opts.bytes, a2, restartA2: async () => await withFault(async () => { await a2.restart() }) })
  return { zk, faultFile, a1, a2, file, fh, model }
}

// The end of a repair of a disk diskMissedByA2 made: the mount reads `model`, a2 is in sync for
// every block and holds a1's newest bytes for each, and those are the model's.
export async function checkRepairedOnA2 (t: { equal: (a: unknown, b: unknown, msg: string) => void, same: (a: unknown, b: unknown, msg: string) => void, fail: (msg: string) => void }, opts: { zk: string, meta: MetaStore, name: string, file: string, fh: fs.promises.FileHandle, model: Buffer, a1: NodeFixture, a2: NodeFixture, blockBytes: number }): Promise<void> {
  const blocks = opts.model.length / opts.blockBytes
  await opts.fh.sync()
  t.equal(sha(await fs.promises.readFile(opts.file)), sha(opts.model), 'the mount reads what the guest wrote')
  const info = await cliJson<{ replicasPerNode: Record<string, { inSync: number }> }>(['disk', 'info', opts.name], opts.zk)
  t.equal(info.replicasPerNode.a2.inSync, blocks, 'a2 in sync for every block')
  const uuid = (await opts.meta.getDisk(opts.name)).uuid
  const on1 = newestVersions(opts.a1.dataDir, uuid)
  const on2 = newestVersions(opts.a2.dataDir, uuid)
  t.same([...on2].sort(), [...on1].sort(), 'a2 holds the same bytes as a1 for every block')
  for (let b = 0; b < blocks; b++) {
    if (on1.get(String(b)) !== sha(opts.model.subarray(b * opts.blockBytes, (b + 1) * opts.blockBytes))) { t.fail(`block ${b} on a1 differs from the model`); break }
  }
}
