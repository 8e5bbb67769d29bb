// A TCP port on 127.0.0.1 that was free a moment ago. Only for programs that cannot listen on
// port 0 and report back (ZooKeeper); callers must retry if another process takes it first.
import net from 'node:net'

export function freePort (host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => { port > 0 ? resolve(port) : reject(new Error('no port')) })
    })
  })
}

// Can we listen on HOST:PORT right now?
export function isPortFree (port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', () => resolve(false))
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)))
  })
}
