// Structured logging (pino). Daemons log JSON lines to stdout; the CLI logs only warnings to stderr.
import pino from 'pino'
import { ukaiVersion } from './package-root'

export type Logger = pino.Logger

export function createLogger (name: string, opts: { level?: string, destination?: number } = {}): Logger {
  const level = opts.level ?? process.env.UKAI_LOG_LEVEL ?? 'info'
  return pino({ name, level, base: { pid: process.pid, version: ukaiVersion() } }, pino.destination({ fd: opts.destination ?? 1, sync: true }))
}

// A logger for code paths that have none passed in (tests, library use).
export const silentLogger: Logger = pino({ level: 'silent' })
