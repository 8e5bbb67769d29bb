// The hook's log: JSON lines appended to the configured file (what an operator reads to see what
// the hook did, and what the tests check) and to stderr (which libvirt logs when a hook fails).
// Synchronous writes: the hook may be ended by its deadline at any moment.
import fs from 'node:fs'
import path from 'node:path'
import pino from 'pino'
import { Logger } from '../log'

export function createHookLogger (logFile: string): Logger {
  const streams: pino.StreamEntry[] = [{ stream: pino.destination({ fd: 2, sync: true }) }]
  try {
    fs.mkdirSync(path.dirname(logFile), { recursive: true })
    streams.push({ stream: pino.destination({ dest: logFile, sync: true, append: true }) })
  } catch (err) {
    process.stderr.write(`ukai libvirt hook: cannot write ${logFile} (${(err as Error).message}); logging to stderr only\n`)
  }
  return pino({ name: 'libvirt-hook', base: { pid: process.pid } }, pino.multistream(streams))
}
