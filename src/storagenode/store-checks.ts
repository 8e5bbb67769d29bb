// The store's argument checks, made once at its public methods (BlockStore): every disk uuid,
// block, epoch and byte range that comes off the wire is checked here before any path is built
// or any byte moves.
import { UkaiError } from '../errors'
import { BLOCK_SIZE_MAX_BYTES } from '../lib/limits'

// No path separators, no dots: a uuid can never name anything outside DATA/disks.
export const DISK_UUID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/

export function checkUuid (uuid: string): void {
  if (typeof uuid !== 'string' || !DISK_UUID_RE.test(uuid)) {
    throw UkaiError.badArgument(`bad disk uuid '${String(uuid).slice(0, 80)}': expected 1-128 letters, digits, '-' or '_'`)
  }
}

export function checkIndex (what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw UkaiError.badArgument(`bad ${what} ${n}: expected a non-negative integer`)
}

export function checkRange (offset: number, length: number, maxLength: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw UkaiError.badArgument(`bad offset ${offset}`)
  if (!Number.isSafeInteger(length) || length < 0) throw UkaiError.badArgument(`bad length ${length}`)
  if (length > maxLength) throw UkaiError.badArgument(`length ${length} exceeds the limit of ${maxLength} bytes per request`)
  if (offset + length > BLOCK_SIZE_MAX_BYTES) throw UkaiError.badArgument(`range ${offset}+${length} exceeds the maximum block size of ${BLOCK_SIZE_MAX_BYTES} bytes`)
}
