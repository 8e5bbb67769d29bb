// Runs one of the bench's scripts (dist/bench/NAME.js) as the operator would, for the tests of
// the bench suites themselves: its output and exit status. The suites stop their own clusters on
// SIGTERM; a test that fails early still ends the script, by PID.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { isAlive } from '../../src/dev/pids'
import type { TestLike } from './cluster'

export async function runBenchScript (t: TestLike, script: string, args: string[], env: Record<string, string>): Promise<{ code: number | null, out: string }> {
  const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'dist', 'bench', script), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  t.teardown(() => { if (child.pid !== undefined && isAlive(child.pid)) process.kill(child.pid, 'SIGTERM') })
  let out = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { out += b.toString() })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  return { code, out }
}
