// `--metrics-listen HOST:PORT`: checked before anything starts. The endpoint has no
// authentication and tells disk names and rates, so it serves on loopback only unless the
// operator says otherwise (`--metrics-listen-any`: e.g. a Prometheus on another host, behind a
// firewall).
import net from 'node:net'
import { UkaiError } from '../errors'
import { parseHostPort } from '../lib/host-port'

export interface MetricsListen { host: string, port: number }

export function isLoopback (host: string): boolean {
  if (host === 'localhost') return true
  if (net.isIPv4(host)) return host.startsWith('127.')
  if (net.isIPv6(host)) return host === '::1' || /^::ffff:127\./i.test(host)
  return false
}

export function checkMetricsListen (text: string, any: boolean): MetricsListen {
  const hp = parseHostPort(text, '--metrics-listen')
  if (hp.host !== 'localhost' && net.isIP(hp.host) === 0) {
    throw UkaiError.badArgument(`bad --metrics-listen '${text}': HOST must be an IP address or localhost`)
  }
  if (!any && !isLoopback(hp.host)) {
    throw UkaiError.badArgument(`--metrics-listen '${text}' is not a loopback address: the endpoint has no authentication; add --metrics-listen-any to serve it there anyway`)
  }
  return hp
}
