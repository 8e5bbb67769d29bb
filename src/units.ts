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
