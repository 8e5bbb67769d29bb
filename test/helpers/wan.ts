// WAN emulation fixture: an in-process delaying proxy (src/dev/wan-proxy.ts) in front of ADDRESS,
// closed by teardown (also when the test failed).
//
//   const slow = await startWanProxy(t, { target: node.address, delayMs: 20 })
//   ... agent started with ['--node-address', `${node.id}=${slow.address}`]
import { startWanProxy as start, type WanProxy, type WanProxyOptions } from '../../src/dev/wan-proxy'
import type { TestLike } from './cluster'

export async function startWanProxy (t: TestLike, opts: WanProxyOptions): Promise<WanProxy> {
  const proxy = await start(opts)
  t.teardown(async () => {
    try {
      await proxy.close()
    } catch (err) {
      t.comment(`teardown: close WAN proxy ${proxy.address} failed: ${String(err)}`)
    }
  })
  return proxy
}
