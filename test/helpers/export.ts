// Helpers of the export/import tests: the CLI with binary stdin/stdout, and a disk written
// through a real mount against a model.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { cliMainPath, daemonEnv } from '../../src/dev/processes'
import { runCli } from './cli'

export interface BinaryCliResult { code: number, stdout: Buffer, stderr: string }

// Like runCli, but stdout is kept as bytes and stdin may be fed (an export to '-', an import from '-').
export function runCliBinary (args: string[], opts: { zk: string, stdin?: Buffer | string, timeoutMs?: number }): Promise<BinaryCliResult> {
  return new Promise((resolve, reject) => {
    const env = daemonEnv()
    env.UKAI_ZK = opts.zk
    const child = spawn(process.execPath, [cliMainPath(), ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => out.push(d))
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.stdin.on('error', () => {}) // the CLI may exit before reading all of it (a refusal)
    if (opts.stdin === undefined) child.stdin.end()
    else if (typeof opts.stdin === 'string') fs.createReadStream(opts.stdin).pipe(child.stdin)
    else child.stdin.end(opts.stdin)
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`ukai ${args.join(' ')} ran past ${opts.timeoutMs ?? 60000} ms`)) }, opts.timeoutMs ?? 60000)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }) })
  })
}

// Writes pieces into a disk through the mount and into the model; returns when the file is closed
// (the agent then releases the lease at the last close).
export async function writeThroughMount (mountPoint: string, disk: string, model: Buffer, pieces: Array<{ offset: number, data: Buffer }>): Promise<void> {
  const fh = await fs.promises.open(path.join(mountPoint, disk), 'r+')
  try {
    for (const p of pieces) {
      await fh.write(p.data, 0, p.data.length, p.offset)
      p.data.copy(model, p.offset)
    }
    await fh.sync()
  } finally {
    await fh.close()
  }
}

export async function snapshot (zk: string, ref: string): Promise<void> {
  const res = await runCli(['snapshot', 'create', ref], { zk, timeoutMs: 60_000 })
  if (res.code !== 0) throw new Error(`ukai snapshot create ${ref} failed (${res.code}): ${res.stderr}`)
}

