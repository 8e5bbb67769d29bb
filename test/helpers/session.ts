// A real ZooKeeper session expiry of a daemon: stop it (SIGSTOP) until ZooKeeper has ended its
// session — its ephemerals gone, seen by `expired()` — then let it run again. The daemon must be
// started with a small --zk-session-timeout-ms. Do not fork (the CLI) while it is stopped with
// a file of its FUSE mount open: the fork hangs; `expired()` should read ZooKeeper in-process.
import type { AgentFixture, NodeFixture, TestLike } from './cluster'
import { until } from './until'

const EXPIRY_WAIT_MS = 20_000
const POLL_MS = 100

export async function expireSession (t: TestLike, daemon: AgentFixture | NodeFixture, expired: () => Promise<boolean>): Promise<void> {
  await daemon.kill('SIGSTOP')
  let resumed = false
  t.teardown(async () => { if (!resumed) await daemon.kill('SIGCONT') })
  await until('the session to expire (its ephemerals gone)', expired, EXPIRY_WAIT_MS, POLL_MS)
  await daemon.kill('SIGCONT')
  resumed = true
}
