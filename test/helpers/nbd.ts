// A cluster whose agent serves NBD: ZooKeeper, two storage nodes on one site, one agent with
// `--nbd-dir` and `--nbd-listen 127.0.0.1:PORT`; and the small waits the NBD tests share.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { freePort } from '../../src/dev/free-port'
import { makeTempDir, startAgent, startNode, startZk, type AgentFixture, type NodeFixture, type TestLike, type ZkFixture } from './cluster'

export const exec = promisify(execFile)

export interface NbdCluster {
  zk: ZkFixture
  nodes: NodeFixture[]
  agent: AgentFixture
  nbdDir: string
  port: number
  socket: (disk: string) => string
  uri: (exportName: string) => string     // nbd+unix:///NAME?socket=… (of the disk part of NAME)
  tcpUri: (exportName: string) => string  // nbd://127.0.0.1:PORT/NAME
}

// agentArgs: more `ukai mount` arguments (e.g. --flush-behind-ms 0 for a test that counts fsyncs).
export async function startNbdCluster (t: TestLike, agentArgs: string[] = []): Promise<NbdCluster> {
  const zk = await startZk(t)
  const nodes = await Promise.all(['a1', 'a2'].map(async id => await startNode(t, { zk, id, site: 'site-a' })))
  const dir = makeTempDir(t, 'nbd')
  const nbdDir = path.join(dir, 'sockets')
  const port = await freePort()
  const agent = await startAgent(t, { zk, host: 'hv-a', site: 'site-a', extraArgs: ['--nbd-dir', nbdDir, '--nbd-listen', `127.0.0.1:${port}`, ...agentArgs] })
  const socket = (disk: string): string => path.join(nbdDir, `${disk}.sock`)
  return {
    zk,
    nodes,
    agent,
    nbdDir,
    port,
    socket,
    uri: (name) => `nbd+unix:///${name}?socket=${socket(name.split('@')[0])}`,
    tcpUri: (name) => `nbd://127.0.0.1:${port}/${name}`
  }
}

export async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

export async function waitForSocket (file: string, present = true): Promise<void> {
  await waitFor(`${file} to ${present ? 'appear' : 'go'}`, () => {
    try { return fs.lstatSync(file).isSocket() === present } catch { return !present }
  })
}

export function qemuUnavailable (): string | null {
  for (const tool of ['qemu-img', 'qemu-io', 'qemu-nbd']) {
    if (!['/usr/bin', '/usr/local/bin'].some(d => fs.existsSync(path.join(d, tool)))) return `${tool} is not installed (Debian qemu-utils)`
  }
  return null
}

// qemu-io against an NBD export; returns stdout, fails on a non-zero exit or a reported error.
export async function qemuIo (uri: string, commands: string[], opts: { readOnly?: boolean } = {}): Promise<string> {
  const args = ['-f', 'raw', ...(opts.readOnly === true ? ['-r'] : [])]
  for (const c of commands) args.push('-c', c)
  args.push(uri)
  const { stdout, stderr } = await exec('qemu-io', args, { maxBuffer: 64 << 20, timeout: 120_000 })
  const all = stdout + stderr
  if (/Pattern verification failed|failed:|error/i.test(all)) throw new Error(`qemu-io ${commands.join(' ; ')}: ${all}`)
  return stdout
}

export interface MapEntry { start: number, length: number, data: boolean, zero: boolean }

export async function qemuImgMap (uri: string): Promise<MapEntry[]> {
  const { stdout } = await exec('qemu-img', ['map', '--output=json', '-f', 'raw', uri], { timeout: 60_000 })
  return JSON.parse(stdout) as MapEntry[]
}

// Byte ranges the map reports as data, merged.
export function dataRanges (map: MapEntry[]): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const e of map) {
    if (!e.data) continue
    const last = out[out.length - 1]
    if (last !== undefined && last[1] === e.start) last[1] = e.start + e.length
    else out.push([e.start, e.start + e.length])
  }
  return out
}
