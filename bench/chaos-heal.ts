// Issue 11's fault cases as chaos rows: each one injects a fault into a real cluster (ZooKeeper,
// storage nodes, one agent with a FUSE mount, standalone `ukai controller` daemons) while a
// checksummed model writer (test/helpers/model-writer.ts) writes through the mount, lets the
// cluster heal with no operator command, and reports: bytes written, verified, lost (must be 0),
// the time from the fault until every block had its replica count again (no stale replica, none
// below the disk's count, nothing left on a node that went away), and the longest single write.
// Same helpers as the tests (test/helpers/cluster.ts), so the bench and the tests fail alike.
// Each case takes 1–2 minutes; `node dist/bench/chaos.js CASE` runs one.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { cliMainPath, daemonEnv } from '../src/dev/processes'
import { AgentFixture, ControllerFixture, NodeFixture, startAgent, startController, startNode, startZk, type TestLike, type ZkFixture } from '../test/helpers/cluster'
import { cliJson, runCli } from '../test/helpers/cli'
import { ModelWriter } from '../test/helpers/model-writer'
import { randomBytes, rng } from '../test/helpers/model'
import { flipByte, versionFiles } from '../test/helpers/node-files'
import type { ChaosRow } from './chaos-row'

const MiB = 1024 * 1024
const DISK_BYTES = 16 * MiB
const HEAL_TIMEOUT_MS = 150_000
const SESSION = ['--zk-session-timeout-ms', '2000']

interface Info { uuid: string, belowReplicaBlocks: number, staleBlocks: number, leaseHolder: string | null, replicasPerNode: Record<string, { inSync: number }>, scrub: { markedStaleTotal: number } | null }
interface Reloc { state: string, executor: string, reason: string, targetNodes: string[], progress: { bytes: number }, plan: { bytes: number } }

interface NodeSpec { id: string, site?: string, capacity?: string, extraArgs?: string[] }
interface Env {
  t: TestLike
  zk: ZkFixture
  zks: string
  nodes: Map<string, NodeFixture>
  agent: AgentFixture
  controllers: ControllerFixture[]
  writer: ModelWriter
  fh: fs.promises.FileHandle
  progress: (s: string) => void
}

// The cluster of a case: its nodes, one agent (no controller candidate), `controllers` daemons,
// and 'vol' (16 MiB, 1 MiB blocks, 2 replicas on `volNodes`) open under a model writer.
async function setup (t: TestLike, progress: (s: string) => void, opts: { nodes: NodeSpec[], volNodes: string[], controllers?: number, controllerArgs?: string[], zkEnsemble?: number, downOutMs?: number }): Promise<Env> {
  const zk = await startZk(t, opts.zkEnsemble === undefined ? {} : { ensemble: opts.zkEnsemble })
  const zks = zk.connectString
  const nodes = new Map<string, NodeFixture>()
  for (const n of opts.nodes) nodes.set(n.id, await startNode(t, { zk, id: n.id, site: n.site ?? 'site-a', capacity: n.capacity, extraArgs: [...SESSION, ...(n.extraArgs ?? [])] }))
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--no-controller'] })
  const controllers: ControllerFixture[] = []
  for (let i = 1; i <= (opts.controllers ?? 1); i++) controllers.push(await startController(t, { zk, host: `ctl-${i}`, extraArgs: [...SESSION, '--repair-interval-ms', '2000', ...(opts.controllerArgs ?? [])] }))
  if (opts.downOutMs !== undefined) await cli(zks, ['config', 'set', 'down-out-ms', String(opts.downOutMs)])
  await cli(zks, ['disk', 'create', 'vol', '--size', '16M', '--block-size', '1M', '--nodes', opts.volNodes.join(',')])
  const fh = await fs.promises.open(path.join(agent.mountPoint, 'vol'), 'r+')
  t.teardown(async () => { await fh.close().catch(() => {}) })
  const writer = new ModelWriter(fh, DISK_BYTES, { seed: 2026, maxWriteBytes: 64 * 1024, pauseMs: 2 })
  // Every block written once: each has its replicas to keep.
  await writer.write(0, randomBytes(rng(1), DISK_BYTES))
  await fh.sync()
  return { t, zk, zks, nodes, agent, controllers, writer, fh, progress }
}

async function cli (zk: string, args: string[]): Promise<string> {
  const r = await runCli(args, { zk })
  if (r.code !== 0) throw new Error(`ukai ${args.join(' ')}: ${r.stderr.trim()}`)
  return r.stdout
}

async function info (zk: string, disk = 'vol'): Promise<Info> { return await cliJson<Info>(['disk', 'info', disk, '--json'], zk) }

// Every block of the disk has its replica count again, all in sync, none on `gone`.
async function replicated (zk: string, disk = 'vol', gone?: string): Promise<boolean> {
  const i = await info(zk, disk).catch(() => null)
  return i !== null && i.belowReplicaBlocks === 0 && i.staleBlocks === 0 && (gone === undefined || i.replicasPerNode[gone] === undefined)
}

async function waitFor (what: string, fn: () => Promise<boolean>, timeoutMs = HEAL_TIMEOUT_MS): Promise<number | null> {
  const started = Date.now()
  while (Date.now() - started < timeoutMs) {
    if (await fn().catch(() => false)) return Date.now() - started
    await sleep(500)
  }
  return null
}

// The common shape: writes run, `inject` (returns when the fault is in; healing is measured from
// then), `healed` polled, writes stop, every byte verified (plus `extra` models, e.g. a cold disk).
async function runCase (env: Env, fault: string, inject: () => Promise<void>, healed: () => Promise<boolean>, notes: string, extra: Array<{ file: string, model: Buffer }> = []): Promise<ChaosRow> {
  const { writer, fh, progress } = env
  writer.start()
  await sleep(3000)
  const bytesBefore = writer.stats.bytesWritten
  writer.window()
  await inject()
  const injectedAt = Date.now()
  progress(`${fault}: injected; waiting for every block's replica count`)
  const healedMs = await waitFor('healed', healed)
  await writer.stop()
  const { longestStallMs } = writer.window()
  await fh.sync()
  const v = await writer.verify()
  let verified = v.bytesVerified
  let lost = v.bytesLost
  for (const x of extra) {
    const got = await fs.promises.readFile(x.file)
    for (let i = 0; i < x.model.length; i++) { if (got[i] === x.model[i]) verified++; else lost++ }
  }
  progress(`${fault}: healed ${healedMs === null ? 'never' : `in ${healedMs} ms`} after the fault (${Date.now() - injectedAt} ms incl. verify), longest write ${longestStallMs} ms, ${lost} bytes lost`)
  return {
    fault,
    bytesWritten: writer.stats.bytesWritten - bytesBefore,
    bytesVerified: verified,
    bytesLost: lost,
    writesFailed: writer.stats.writesFailed,
    longestStallMs,
    healedMs,
    notes: [notes, v.firstMismatchAt !== null ? `first mismatch at byte ${v.firstMismatchAt}` : '', writer.stats.failures.slice(0, 2).join(' | ')].filter(s => s !== '').join('; ')
  }
}

function node (env: Env, id: string): NodeFixture {
  const n = env.nodes.get(id)
  if (n === undefined) throw new Error(`no node ${id}`)
  return n
}

// A second disk written once and closed: nobody holds its lease, so the controller runs its moves.
async function coldDisk (env: Env, name: string, args: string[], sizeBytes: number): Promise<{ file: string, model: Buffer }> {
  await cli(env.zks, ['disk', 'create', name, '--size', String(sizeBytes), ...args])
  const file = path.join(env.agent.mountPoint, name)
  const model = randomBytes(rng(name.length * 7919), sizeBytes)
  const fh = await fs.promises.open(file, 'r+')
  try { await fh.write(model, 0, sizeBytes, 0); await fh.sync() } finally { await fh.close() }
  await waitFor('its lease to be free', async () => (await info(env.zks, name)).leaseHolder === null, 30_000)
  return { file, model }
}

type Case = (t: TestLike, progress: (s: string) => void) => Promise<ChaosRow>

const DOWN_OUT_MS = 5000

export const HEAL_CASES: Record<string, Case> = {
  // kill -9 a node for good: down, out after down-out-ms, its replicas made again on a3.
  'node-killed': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }, { id: 'a3' }], volNodes: ['a1', 'a2'], downOutMs: DOWN_OUT_MS })
    return await runCase(env, 'kill -9 a node for good', async () => { await node(env, 'a2').kill('SIGKILL') },
      async () => await replicated(env.zks, 'vol', 'a2'), `down-out-ms ${DOWN_OUT_MS}; healed = a2's replicas re-made on a3 (2 session + down-out + copy)`)
  },
  // A node back after a 15 s outage: the blocks written meanwhile are stale on it and repaired.
  'node-restarted': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }], volNodes: ['a1', 'a2'] })
    let staleSeen = 0
    return await runCase(env, 'restart a node after a 15 s outage', async () => {
      await node(env, 'a2').kill('SIGKILL')
      await sleep(15_000)
      staleSeen = (await info(env.zks)).staleBlocks
      await node(env, 'a2').restart()
    }, async () => await replicated(env.zks), '').then(r => ({ ...r, notes: `${staleSeen} blocks stale at the restart; healed = counted from the restart (automatic repair)` })).finally(() => {
      // What the repair did, for a heal that takes long (the temp dirs go with the teardown).
      for (const f of [env.agent.logFile, env.controllers[0].logFile]) {
        const lines = fs.readFileSync(f, 'utf8').split('\n').filter(l => /repair|relocation (paused|done|running)|falling out of sync/.test(l))
        for (const l of lines.slice(-12)) progress(`${path.basename(path.dirname(f))}: ${l.slice(0, 400)}`)
      }
    })
  },
  // A byte flipped in a block nobody reads (a cold disk): the node's background scrub finds it,
  // the controller marks it stale, the repair copies it again.
  'flip-bytes': async (t, progress) => {
    const scrub = ['--scrub-mbps', '100', '--scrub-interval-ms', '2000']
    const env = await setup(t, progress, { nodes: [{ id: 'a1', extraArgs: scrub }, { id: 'a2', extraArgs: scrub }], volNodes: ['a1', 'a2'], controllerArgs: ['--scrub-findings-interval-ms', '1000'] })
    const cold = await coldDisk(env, 'cold', ['--block-size', '256K', '--nodes', 'a1,a2'], 4 * MiB)
    const uuid = (await info(env.zks, 'cold')).uuid
    return await runCase(env, 'flip a byte in a block nobody reads', async () => {
      const f = versionFiles(node(env, 'a2').dataDir, uuid).find(x => x.startsWith('6.'))
      if (f === undefined) throw new Error('a2 holds no version of cold block 6')
      flipByte(path.join(node(env, 'a2').dataDir, 'disks', uuid, f), 70_000)
    }, async () => {
      const i = await info(env.zks, 'cold')
      return (i.scrub?.markedStaleTotal ?? 0) >= 1 && i.staleBlocks === 0 && i.belowReplicaBlocks === 0
    }, 'cold 4 MiB disk; scrub pass every 2 s, controller asks every 1 s; healed = marked stale by the controller and repaired', [cold])
  },
  // The leader runs an unleased disk's relocation (lease-free) and is killed -9 mid-copy.
  'controller-killed-mid-relocation': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }, { id: 'b1', site: 'site-b' }, { id: 'b2', site: 'site-b' }], volNodes: ['a1', 'a2'], controllers: 2 })
    const cold = await coldDisk(env, 'cold', ['--block-size', '1M', '--site', 'site-a'], 32 * MiB)
    let finisher = '?'
    return await runCase(env, 'kill -9 the controller leader mid-relocation', async () => {
      await relocateAndKillCli(env, 'cold')
      const got = await waitFor('ctl-1 copies cold', async () => { const s = await reloc(env.zks, 'cold'); return s.executor === 'ctl-1' && s.progress.bytes > 0 && s.state === 'copying' }, 60_000)
      if (got === null) throw new Error('the leader ctl-1 never ran the orphaned relocation')
      await env.controllers[0].kill('SIGKILL')
    }, async () => { const s = await reloc(env.zks, 'cold'); finisher = s.executor === '' ? finisher : s.executor; return s.state === 'done' && await replicated(env.zks, 'cold') },
    '', [cold]).then(r => ({ ...r, notes: `cold 32 MiB moved to site-b at 3 MB/s; its CLI killed, then the leader ctl-1 mid-copy; last executor seen ${finisher}; healed = done` }))
  },
  // The CLI that runs an unleased relocation is killed -9: the controller finishes it.
  'relocation-cli-killed': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }, { id: 'b1', site: 'site-b' }, { id: 'b2', site: 'site-b' }], volNodes: ['a1', 'a2'] })
    const cold = await coldDisk(env, 'cold', ['--block-size', '1M', '--site', 'site-a'], 32 * MiB)
    return await runCase(env, 'kill -9 the CLI of an unleased relocation', async () => { await relocateAndKillCli(env, 'cold') },
      async () => { const s = await reloc(env.zks, 'cold'); return s.state === 'done' && await replicated(env.zks, 'cold') },
      'cold 32 MiB to site-b at 3 MB/s; healed = done by the controller', [cold])
  },
  // A node comes back; the leader starts repairing an unleased disk and is killed -9 mid-repair.
  'controller-killed-mid-repair': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }], volNodes: ['a1', 'a2'], controllers: 2, controllerArgs: ['--repair-rate', '2'] })
    const cold = await coldDisk(env, 'cold', ['--block-size', '1M', '--nodes', 'a1,a2'], 32 * MiB)
    let finisher = '?'
    return await runCase(env, 'kill -9 the controller leader mid-repair', async () => {
      await node(env, 'a2').kill('SIGKILL')
      // The cold disk is rewritten while a2 is away: every block stale there.
      const fh = await fs.promises.open(cold.file, 'r+')
      try { cold.model.fill(0x5a, 0, 24 * MiB); await fh.write(cold.model, 0, 24 * MiB, 0); await fh.sync() } finally { await fh.close() }
      await node(env, 'a2').restart()
      const got = await waitFor('ctl-1 repairs cold', async () => { const s = await reloc(env.zks, 'cold'); return s.executor === 'ctl-1' && s.state === 'copying' && s.progress.bytes > 0 }, 60_000)
      if (got === null) throw new Error('the leader ctl-1 never ran the repair of cold')
      await env.controllers[0].kill('SIGKILL')
    }, async () => { const s = await reloc(env.zks, 'cold'); finisher = s.executor === '' ? finisher : s.executor; return await replicated(env.zks, 'cold') && await replicated(env.zks) },
    '', [cold]).then(r => ({ ...r, notes: `cold 32 MiB, 24 MiB rewritten while a2 was down; repairs at 2 MB/s; leader ctl-1 killed mid-copy; last executor seen ${finisher}; healed = both disks in sync` }))
  },
  // `ukai node drain a2` while the writer writes.
  'drain-under-writes': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }, { id: 'a3' }], volNodes: ['a1', 'a2'] })
    return await runCase(env, 'drain a node under writes', async () => { await cli(env.zks, ['node', 'drain', 'a2']) },
      async () => await replicated(env.zks, 'vol', 'a2'), 'healed = nothing left on a2, every block 2 in-sync replicas')
  },
  // One member of a three-member ensemble killed -9 for 15 s under I/O.
  'zk-member-lost': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }], volNodes: ['a1', 'a2'], zkEnsemble: 3 })
    let role = ''
    return await runCase(env, 'lose one ZooKeeper member of three under I/O', async () => {
      const victim = await env.zk.leader()
      role = `leader ${victim.id}`
      await victim.kill('SIGKILL')
      await sleep(15_000)
      await victim.restart()
    }, async () => await replicated(env.zks), '').then(r => ({ ...r, notes: `${role} killed for 15 s, restarted; healed = counted from its restart` }))
  },
  // a2 dies for good; its replacement a3 (--capacity 22M, 12 MiB taken by another disk) fills
  // up mid-copy; deleting that disk frees it and the re-replication finishes.
  'node-full-rereplication': async (t, progress) => {
    const env = await setup(t, progress, { nodes: [{ id: 'a1' }, { id: 'a2' }, { id: 'a3', capacity: '22M' }], volNodes: ['a1', 'a2'], downOutMs: DOWN_OUT_MS })
    await coldDisk(env, 'filler', ['--block-size', '1M', '--replicas', '1', '--nodes', 'a3'], 12 * MiB)
    let why = ''
    return await runCase(env, 'node full during re-replication', async () => {
      await node(env, 'a2').kill('SIGKILL')
      const stuck = await waitFor('the move onto a3 pauses', async () => { const s = await reloc(env.zks, 'vol'); why = s.reason; return s.state === 'paused' }, 90_000)
      if (stuck === null) throw new Error('the re-replication never stopped on the full node')
      progress(`paused: ${why}`)
      await cli(env.zks, ['disk', 'delete', 'filler'])
    }, async () => await replicated(env.zks, 'vol', 'a2'), '').then(r => ({ ...r, notes: `paused with "${why.slice(0, 120)}"; healed = counted from the filler's deletion` }))
  }
}

async function reloc (zk: string, disk: string): Promise<Reloc> {
  const all = await cliJson<Reloc[] | Reloc>(['relocate', 'status', disk, '--json'], zk)
  return Array.isArray(all) ? all[0] : all
}

// `ukai relocate DISK --to site-b --rate 3 --wait` runs an unleased relocation in the CLI; it is
// killed -9 once it copied something.
async function relocateAndKillCli (env: Env, disk: string): Promise<void> {
  const child = spawn(process.execPath, [cliMainPath(), 'relocate', disk, '--to', 'site-b', '--rate', '3', '--no-probe', '--wait'], { env: { ...daemonEnv(), UKAI_ZK: env.zks }, stdio: 'ignore' })
  const exited = new Promise(resolve => child.on('exit', resolve))
  env.t.teardown(async () => { if (child.exitCode === null) child.kill('SIGKILL') })
  const ok = await waitFor('the CLI copies', async () => { const s = await reloc(env.zks, disk); return s.executor.startsWith('cli-') && s.progress.bytes > 2 * MiB }, 60_000)
  if (ok === null) throw new Error('the CLI never started copying')
  child.kill('SIGKILL')
  await exited
}

export async function runHealCase (name: string, t: TestLike, progress: (s: string) => void): Promise<ChaosRow[]> {
  const c = HEAL_CASES[name]
  if (c === undefined) throw new Error(`unknown case ${name}`)
  return [await c(t, progress)]
}
