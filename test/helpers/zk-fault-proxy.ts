// A TCP proxy on 127.0.0.1 in front of a real ZooKeeper that can rewrite the error code of the
// server's replies: how the bad frames of issue 9 (codes node-zookeeper-client does not know,
// e.g. SESSION_MOVED -118 after a server restart) are reproduced on demand. Closed by teardown.
//
//   const proxy = await startZkFaultProxy(t, zk.connectString)
//   proxy.rewriteReplies(1, -118)  // the next reply to a request (xid > 0) carries err -118
//   proxy.cut(); ...; proxy.heal()  // partition the clients behind it from ZooKeeper, and back
import net from 'node:net'
import type { TestLike } from './cluster'

export interface ZkFaultProxy {
  readonly connectString: string
  rewriteReplies (count: number, errCode: number): void
  cut (): void   // drops every connection and refuses new ones
  heal (): void
  readonly rewritten: number
  close (): Promise<void>
}

// Reply frame: int32 length, then ReplyHeader { int32 xid, int64 zxid, int32 err }.
const XID_OFFSET = 4
const ERR_OFFSET = 4 + 4 + 8

export async function startZkFaultProxy (t: TestLike, target: string): Promise<ZkFaultProxy> {
  const [host, port] = target.split(':')
  let pending = 0
  let code = 0
  let rewritten = 0
  let isCut = false
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    if (isCut) { client.destroy(); return }
    const upstream = net.connect(Number(port), host)
    sockets.add(client); sockets.add(upstream)
    let buf = Buffer.alloc(0)
    let sawConnectResponse = false
    client.on('data', (d) => upstream.write(d))
    upstream.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 4 && buf.length >= 4 + buf.readInt32BE(0)) {
        const frame = Buffer.from(buf.subarray(0, 4 + buf.readInt32BE(0)))
        buf = buf.subarray(frame.length)
        if (!sawConnectResponse) sawConnectResponse = true // the first frame is the ConnectResponse
        else if (pending > 0 && frame.length >= ERR_OFFSET + 4 && frame.readInt32BE(XID_OFFSET) > 0) {
          frame.writeInt32BE(code, ERR_OFFSET)
          pending--
          rewritten++
        }
        client.write(frame)
      }
    })
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on('close', end); upstream.on('close', end)
    client.on('error', end); upstream.on('error', end)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address() as net.AddressInfo
  const proxy: ZkFaultProxy = {
    connectString: `127.0.0.1:${address.port}`,
    rewriteReplies (count, errCode) { pending = count; code = errCode },
    get rewritten () { return rewritten },
    cut () { isCut = true; for (const s of sockets) s.destroy() },
    heal () { isCut = false },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
  t.teardown(async () => await proxy.close())
  return proxy
}
