// Sizes as operators type them (qemu-img style: 512, 64K, 4M, 20G, 1T; binary multiples).
import { UkaiError } from './errors'

const UNIT_SHIFT: Record<string, number> = { '': 0, B: 0, K: 10, M: 20, G: 30, T: 40, P: 50 }

export function parseSize (text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(String(text))
  if (m === null) throw UkaiError.badArgument(`bad ${what} '${text}': expected a number with an optional K, M, G, T or P suffix (e.g. 20G)`)
  const value = Number(m[1]) * 2 ** UNIT_SHIFT[m[2].toUpperCase()]
  if (!Number.isSafeInteger(value)) throw UkaiError.badArgument(`bad ${what} '${text}': not a whole number of bytes below 2^53`)
  return value
}

export function formatBytes (bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = bytes
  let i = 0
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return i === 0 ? `${bytes} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`
}

// Rates in the unit `--rate` takes (MB/s, decimal, as network links are sold), so the number an
// operator types and the one every display shows agree.
export function formatRate (bytesPerSec: number): string {
  const mb = bytesPerSec / 1e6
  return `${mb.toFixed(mb >= 100 ? 0 : mb >= 10 ? 1 : 2)} MB/s`
}

// "1 block", "3 blocks": counts in messages read as English, not "block(s)".
export function plural (n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`
}
