// How the CLI prints: tables for people, --json for scripts, one error line with the reason.
import Table from 'cli-table3'
import { UkaiError } from '../errors'

// Every table's cells are capped (longer text ends in '…'; --json has it whole), so one long
// reason or node list cannot push a table past any terminal; a table may ask for a tighter cap,
// for every column or per column.
export const CELL_CHARS_MAX = 64

export function printTable (head: string[], rows: Array<Array<string | number>>, opts: { cellCharsMax?: number | number[] } = {}): void {
  const table = new Table({ head, style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } })
  const capOf = (i: number): number => Array.isArray(opts.cellCharsMax) ? opts.cellCharsMax[i] ?? CELL_CHARS_MAX : opts.cellCharsMax ?? CELL_CHARS_MAX
  for (const r of rows) table.push(r.map(String).map((c, i) => c.length > capOf(i) ? c.slice(0, capOf(i) - 1) + '…' : c))
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
