// Runs the real `ukai` CLI as a child process and captures what a user would see.
import { spawn } from 'node:child_process'
import { cliMainPath, daemonEnv } from '../../src/dev/processes'
import { processZkAuth } from '../../src/dev/process-zk-auth'
import { adminTlsDir } from './tls'

export interface CliResult { code: number, stdout: string, stderr: string }

// zkAuth: another credentials file than the test process's (a `dev up` cluster's own).
// tlsDir: the CLI's certificate (default: the test CA's admin, helpers/tls.ts, once made).
export function runCli (args: string[], opts: { zk?: string, zkAuth?: string, timeoutMs?: number, tlsDir?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = daemonEnv()
    env.UKAI_ZK_AUTH = opts.zkAuth ?? processZkAuth().file // the test process's credentials (ZooKeeper ACLs on)
    if (opts.zk !== undefined) env.UKAI_ZK = opts.zk
    const tlsDir = opts.tlsDir ?? adminTlsDir()
    if (tlsDir !== undefined) env.UKAI_TLS_DIR = tlsDir
    const child = spawn(process.execPath, [cliMainPath(), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`ukai ${args.join(' ')} ran past ${opts.timeoutMs ?? 30000} ms`)) }, opts.timeoutMs ?? 30000)
    child.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }) })
  })
}

export async function cliJson<T> (args: string[], zk: string, opts: { zkAuth?: string, tlsDir?: string } = {}): Promise<T> {
  const res = await runCli([...args, '--json'], { zk, ...opts })
  if (res.code !== 0) throw new Error(`ukai ${args.join(' ')} failed (${res.code}): ${res.stderr}`)
  return JSON.parse(res.stdout) as T
}

// Runs the CLI and asserts it succeeded; returns its stdout.
export async function cliOk (t: { equal: (found: any, wanted: any, msg: string) => unknown }, args: string[], zk: string, timeoutMs?: number): Promise<string> {
  const r = await runCli(args, { zk, timeoutMs })
  t.equal(r.code, 0, `ukai ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}
