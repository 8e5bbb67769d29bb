// One parser per kind of command-line value. Each is given to commander as the option's parser,
// so a bad value is refused while the command line is read — before any verb connects to
// ZooKeeper or changes anything — with a BAD_ARGUMENT that names the flag and the value (exit 2).
// `Number(text)` only ever sees text a pattern checked: alone it turns 'two' into NaN, '' into 0 and '1e3'
// into 1000.
import { UkaiError } from '../errors'
import { parseHostPort } from '../lib/host-port'
import { validateId } from '../meta/schema'
import { parseSize } from '../units'

// The longest wait a flag may ask for: a day. Larger is a typo, and timers overflow at 2^31 ms.
export const MS_MAX = 24 * 3600 * 1000
// Counts (replicas, open files, sites): far above any real value, far below 2^31.
export const COUNT_MAX = 1_000_000

type Parser<T> = (text: string) => T

// A whole number of milliseconds, from min (default 1: "wait 0 ms" is never what was meant).
export function msOption (flag: string, min = 1): Parser<number> {
  return (text) => {
    if (!/^\d+$/.test(text.trim())) throw UkaiError.badArgument(`bad ${flag} '${text}': expected a whole number of milliseconds`)
    const ms = Number(text)
    if (ms < min || ms > MS_MAX) throw UkaiError.badArgument(`bad ${flag} '${text}': must be ${min} to ${MS_MAX} ms`)
    return ms
  }
}

// A whole number in [min, max].
export function countOption (flag: string, min = 1, max = COUNT_MAX): Parser<number> {
  return (text) => {
    if (!/^\d+$/.test(text.trim())) throw UkaiError.badArgument(`bad ${flag} '${text}': expected a whole number`)
    const n = Number(text)
    if (n < min || n > max) throw UkaiError.badArgument(`bad ${flag} '${text}': must be ${min} to ${max}`)
    return n
  }
}

// The replica count has its own wording (the tests and docs say "bad replica count").
export function replicasOption (text: string): number {
  if (!/^\d+$/.test(text.trim())) throw UkaiError.badArgument(`bad replica count '${text}': expected a whole number`)
  return Number(text)
}

// A size in bytes (20G, 4M, 512): more than 0 unless zeroOk. Range and alignment rules that
// belong to the thing sized (a disk's 512-byte multiple, a block size's power of two) stay with
// the code that owns them.
export function sizeOption (what: string, opts: { zeroOk?: boolean } = {}): Parser<number> {
  return (text) => {
    const bytes = parseSize(text, what)
    if (bytes === 0 && opts.zeroOk !== true) throw UkaiError.badArgument(`bad ${what} '${text}': must be more than 0 bytes`)
    return bytes
  }
}

// MB/s (decimal, as `--rate 50` or `--rate 0.5`) → bytes per second.
export function rateOption (text: string): number {
  if (!/^\d+(\.\d+)?$/.test(text.trim())) throw UkaiError.badArgument(`bad rate '${text}': expected MB/s, a number > 0`)
  const bytesPerSec = Math.round(Number(text) * 1e6)
  if (bytesPerSec <= 0) throw UkaiError.badArgument(`bad rate '${text}': expected MB/s, a number > 0`)
  return bytesPerSec
}

// A site, node or host name (the schema's rule for ids).
export function idOption (what: string): Parser<string> {
  return (text) => { validateId(text, what); return text }
}

// `--nodes a,b`: node ids, at least one, each a valid id.
export function nodeListOption (text: string): string[] {
  const ids = text.split(',').map(s => s.trim())
  if (ids.length === 0 || ids.some(id => id === '')) throw UkaiError.badArgument(`bad --nodes '${text}': expected node ids separated by commas`)
  for (const id of ids) validateId(id, 'node id in --nodes')
  return ids
}

// One of a fixed set of words.
export function choiceOption<T extends string> (flag: string, allowed: readonly T[]): Parser<T> {
  return (text) => {
    if (!(allowed as readonly string[]).includes(text)) throw UkaiError.badArgument(`bad ${flag} '${text}': expected ${allowed.join(' or ')}`)
    return text as T
  }
}

// A decimal number ≥ 0 (a WAN delay of 0.5 ms, a bandwidth cap of 2.5 Mbit/s).
export function numberOption (flag: string): Parser<number> {
  return (text) => {
    if (!/^\d+(\.\d+)?$/.test(text.trim())) throw UkaiError.badArgument(`bad ${flag} '${text}': expected a number`)
    return Number(text)
  }
}

// HOST:PORT (a daemon's --listen), checked as the WAN proxy checks its own.
export function hostPortOption (flag: string): Parser<string> {
  return (text) => { parseHostPort(text, flag); return text }
}

// A ZooKeeper connect string: HOST:PORT[,HOST:PORT…][/chroot]. Also applied to $UKAI_ZK.
export function checkZkConnect (text: string, from: string): string {
  const slash = text.indexOf('/')
  const hosts = slash < 0 ? text : text.slice(0, slash)
  const ok = hosts.split(',').every(h => { try { return parseHostPort(h, from).port > 0 } catch { return false } })
  if (!ok) throw UkaiError.badArgument(`bad ${from} '${text}': expected HOST:PORT[,HOST:PORT…]`)
  return text
}
