// The HTTP endpoint of a daemon's metrics: GET /metrics (Prometheus text format, prom-client's
// registry) and GET /healthz (readiness: 200 "ok" once the daemon serves and its ZooKeeper
// session is connected; 503 and the reason otherwise). Started before the daemon, so a scrape
// during start-up says "starting" instead of failing to connect; closed after it.
import http from 'node:http'
import { Registry, collectDefaultMetrics } from 'prom-client'
import { UkaiError } from '../errors'
import type { Logger } from '../log'
import type { MetricsListen } from './listen-address'

// A scrape that takes longer than this is cut (a ZooKeeper read for the relocation figures is
// bounded shorter, see agent-metrics.ts); Prometheus's default scrape timeout is 10 s.
const SCRAPE_TIMEOUT_MS = 5000
// Connections kept alive by a scraper are closed this long after the last request.
const KEEP_ALIVE_MS = 30_000

// A fresh registry with prom-client's process metrics (CPU, memory, heap, event loop lag, open
// fds: `process_*`, `nodejs_*`, the names Node dashboards expect), every series labelled with
// `labels` (e.g. the node id or the host).
export function newRegistry (labels: Record<string, string>): Registry {
  const registry = new Registry()
  registry.setDefaultLabels(labels)
  collectDefaultMetrics({ register: registry })
  return registry
}

export interface EndpointOptions {
  listen: MetricsListen
  registry: Registry
  // null when ready; otherwise why not (the 503's body).
  notReady: () => string | null
  logger: Logger
}

export class MetricsEndpoint {
  private closing: Promise<void> | null = null

  private constructor (private readonly server: http.Server, readonly address: string) {}

  static async start (opts: EndpointOptions): Promise<MetricsEndpoint> {
    const server = http.createServer((req, res) => {
      answer(req, res, opts).catch(err => {
        opts.logger.warn({ err: String(err) }, 'metrics request failed')
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end('internal error\n')
      })
    })
    server.keepAliveTimeout = KEEP_ALIVE_MS
    server.requestTimeout = SCRAPE_TIMEOUT_MS * 2
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(opts.listen.port, opts.listen.host, () => { server.off('error', reject); resolve() })
    }).catch(err => {
      throw UkaiError.unavailable(`cannot serve metrics on ${opts.listen.host}:${opts.listen.port}: ${(err as Error).message}`, err)
    })
    const a = server.address()
    const address = typeof a === 'object' && a !== null ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : String(a)
    opts.logger.info({ metricsAddress: address }, 'metrics endpoint listening')
    return new MetricsEndpoint(server, address)
  }

  // Idempotent; open scrape connections are cut.
  close (): Promise<void> {
    this.closing ??= new Promise<void>(resolve => {
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
    return this.closing
  }
}

async function answer (req: http.IncomingMessage, res: http.ServerResponse, opts: EndpointOptions): Promise<void> {
  const url = (req.url ?? '/').split('?')[0]
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end('only GET\n')
    return
  }
  if (url === '/healthz') {
    const why = opts.notReady()
    res.writeHead(why === null ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    res.end(why === null ? 'ok\n' : `not ready: ${why}\n`)
    return
  }
  if (url === '/metrics') {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`scrape took over ${SCRAPE_TIMEOUT_MS} ms`)), SCRAPE_TIMEOUT_MS)
    })
    try {
      const text = await Promise.race([opts.registry.metrics(), timeout])
      res.writeHead(200, { 'content-type': opts.registry.contentType, 'cache-control': 'no-store' }).end(text)
    } finally {
      clearTimeout(timer)
    }
    return
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n')
}
