// HOST:PORT as operators type it (an IPv6 host in brackets). Shared by the CLI's option parsing
// and the dev WAN proxy, so the CLI needs nothing from src/dev for it.
import { UkaiError } from '../errors'

export function parseHostPort (text: string, what: string): { host: string, port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(text)
  const port = m === null ? NaN : Number(m[2])
  if (m === null || m[1] === '' || port > 65535) throw UkaiError.badArgument(`bad ${what} '${text}': expected HOST:PORT`)
  return { host: m[1].replace(/^\[(.*)\]$/, '$1'), port }
}
