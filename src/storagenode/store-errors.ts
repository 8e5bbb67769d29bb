// Filesystem errors → UkaiError, at the store's boundary: a full data dir (ENOSPC, EDQUOT) is
// NO_SPACE, like the store's own quota; anything else the filesystem says is IO_ERROR. A
// UkaiError passes through unchanged, so a piece may translate what it catches without knowing
// whether a collaborator did already.
import { UkaiError, isUkaiError } from '../errors'

export type TranslateError = (err: unknown, what: string) => UkaiError

export function storeErrorTranslator (nodeId: string, dataDir: string, capacityBytes: number | undefined): TranslateError {
  return (err, what) => {
    if (isUkaiError(err)) return err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return UkaiError.noSpace(`storage node ${nodeId}: ${what}: data dir ${dataDir} is out of space (${code}; capacity ${capacityBytes ?? 'filesystem'} bytes)`)
    }
    return UkaiError.io(`storage node ${nodeId}: ${what}: ${(err as Error).message}`, err)
  }
}
