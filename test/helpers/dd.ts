// Runs dd(1) with the given operands; rejects with its stderr when it fails. Tests use it to write
// a mount from processes other than the test itself (several at once, with oflag=direct).
import { spawn } from 'node:child_process'

export function dd (args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('dd', args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (d: Buffer) => { err += d.toString() })
    p.on('error', reject)
    p.on('exit', (code) => code === 0 ? resolve() : reject(new Error(`dd ${args.join(' ')} exited ${code}: ${err}`)))
  })
}
