// The cost of a huge thin disk: creating a 1 TiB disk is a metadata write, opening it on the
// mount and reading its first 4 KiB (an unwritten block: zeros) should take milliseconds, and
// its placement map should cost kilobytes in ZooKeeper.
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'
import { createDisk } from '../src/admin/disk-admin'
import { cliMainPath } from '../src/dev/processes'
import type { MetaStore } from '../src/meta/store'

export const TIB = 2 ** 40

export interface BigDiskResult {
  name: string
  sizeBytes: number
  blockSizeBytes: number
  createInProcessMs: number      // createDisk() over an open ZooKeeper session
  createCliMs: number            // `ukai disk create NAME --size 1T`: node start + ZK connect + create
  openAndRead4KiBMs: number      // open(2) on the mount + pread 4 KiB + close, first time
  zkMetadataBytes: number        // disk record + placement segments
}

async function timeMs (fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t) / 1e6
}

function runCli (args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMainPath(), ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString('utf8') })
    child.on('error', reject)
    child.on('close', (code) => code === 0 ? resolve() : reject(new Error(`ukai ${args.join(' ')} exited with ${code}: ${stderr.trim()}`)))
  })
}

export async function measureBigDisk (opts: { meta: MetaStore, zkConnect: string, mountPoint: string, name?: string }): Promise<BigDiskResult> {
  const name = opts.name ?? 'big'
  let blockSizeBytes = 0
  const createInProcessMs = await timeMs(async () => {
    blockSizeBytes = (await createDisk(opts.meta, { name, sizeBytes: TIB, replicas: 2 })).blockSizeBytes
  })
  const createCliMs = await timeMs(() => runCli(['disk', 'create', `${name}-cli`, '--size', '1T', '--zk', opts.zkConnect]))
  const buf = Buffer.alloc(4096)
  const openAndRead4KiBMs = await timeMs(async () => {
    const fh = await fs.open(path.join(opts.mountPoint, name), 'r')
    try {
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0)
      if (bytesRead !== buf.length) throw new Error(`read ${bytesRead} bytes of ${name}, expected ${buf.length}`)
    } finally {
      await fh.close()
    }
  })
  const zkMetadataBytes = await opts.meta.segmentSizes(name)
  return { name, sizeBytes: TIB, blockSizeBytes, createInProcessMs, createCliMs, openAndRead4KiBMs, zkMetadataBytes }
}
