// A TCP port on 127.0.0.1 that was free a moment ago, for servers that must come back on the
// same port after a restart (ZooKeeper; storage nodes in tests). Callers retry if another process
// takes it first.
//
// Ports come from *below* the kernel's ephemeral range (ip_local_port_range). A port in that
// range can be taken at any time as the local end of some outgoing connection — including a
// client that keeps reconnecting to the very port while its server is down: on loopback such a
// connect() can pick the same number as its source port and connect to itself (TCP simultaneous
// open), and the restarted server then cannot bind.
import fs from 'node:fs'
import net from 'node:net'

const PORT_MIN = 10_000
const EPHEMERAL_LOW_DEFAULT = 32_768
const PICK_ATTEMPTS_MAX = 64

function ephemeralLow (): number {
  try {
    const low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > PORT_MIN + 100 ? low : EPHEMERAL_LOW_DEFAULT
  } catch {
    return EPHEMERAL_LOW_DEFAULT
  }
}

export async function freePort (host = '127.0.0.1'): Promise<number> {
  const high = ephemeralLow() - 1
  for (let i = 0; i < PICK_ATTEMPTS_MAX; i++) {
    const port = PORT_MIN + Math.floor(Math.random() * (high - PORT_MIN + 1))
    if (await isPortFree(port, host)) return port
  }
  return await kernelPort(host)
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

// Whatever the kernel hands out for port 0 (in the ephemeral range).
function kernelPort (host: string): Promise<number> {
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
