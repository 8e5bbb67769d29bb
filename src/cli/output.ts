// How the CLI prints: tables for people, --json for scripts, one error line with the reason.
import Table from 'cli-table3'
import { UkaiError } from '../errors'

// cellCharsMax caps every cell (longer text ends in '…'; --json has it whole).
export function printTable (head: string[], rows: Array<Array<string | number>>, opts: { cellCharsMax?: number } = {}): void {
  const table = new Table({ head, style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } })
  const cap = opts.cellCharsMax ?? Infinity
  for (const r of rows) table.push(r.map(String).map(c => c.length > cap ? c.slice(0, cap - 1) + '…' : c))
  process.stdout.write(table.toString() + '\n')
}

export function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}

// Exit status: 2 for a bad command line, 1 for anything else that failed.
export function exitCodeFor (err: unknown): number {
  return err instanceof UkaiError && err.code === 'BAD_ARGUMENT' ? 2 : 1
}

// Under --json or -o json a script gets the error as one JSON line on stderr (stdout stays what
// the verb prints on success): { "error": { "code", "message", "exitStatus" } }.
export function reportError (err: unknown, asJson = false): void {
  const msg = err instanceof UkaiError ? err.message : String((err as Error)?.stack ?? err)
  if (asJson) {
    const code = err instanceof UkaiError ? err.code : 'INTERNAL'
    process.stderr.write(JSON.stringify({ error: { code, message: msg, exitStatus: exitCodeFor(err) } }) + '\n')
    return
  }
  process.stderr.write(`ukai: error: ${msg}\n`)
}

// Whether the command line asked for JSON (read from argv: the error may come before parsing ends).
export function wantsJson (argv: readonly string[]): boolean {
  return argv.some((a, i) => a === '--json' || a === '--output=json' || a === '-ojson' || ((a === '-o' || a === '--output') && argv[i + 1] === 'json'))
}
