// Live migration of the test guest between two QEMU processes on this machine, driven over QMP as
// an operator (or libvirt) does it: the destination starts with `-incoming tcp:127.0.0.1:PORT`,
// the source gets `migrate`, and `query-migrate` reports the outcome and QEMU's own downtime.
import { freePort } from '../../src/dev/free-port'
import { QemuGuest, type GuestOptions } from './qemu'

const MIGRATION_TIMEOUT_MS = 180_000
const POLL_MS = 100

export interface MigrationResult {
  dest: QemuGuest
  status: string
  downtimeMs: number       // QEMU's figure: how long the VM was paused for the final copy
  totalTimeMs: number
  setupTimeMs: number
  ramTransferredBytes: number
  completedAtMs: number
}

export async function liveMigrate (source: QemuGuest, destOpts: Omit<GuestOptions, 'incomingPort'>): Promise<MigrationResult> {
  const port = await freePort()
  const dest = await QemuGuest.start({ ...destOpts, incomingPort: port })
  const qmp = source.qmp
  if (qmp === null) throw new Error('source has no QMP connection')
  await qmp.execute('migrate', { uri: `tcp:127.0.0.1:${port}` })
  const deadline = Date.now() + MIGRATION_TIMEOUT_MS
  for (;;) {
    const q = await qmp.execute('query-migrate')
    if (q.status === 'completed' || q.status === 'failed' || q.status === 'cancelled') {
      if (q.status !== 'completed') { dest.kill(); throw new Error(`migration ${q.status}: ${q['error-desc'] ?? ''}`) }
      return {
        dest,
        status: q.status,
        downtimeMs: q.downtime ?? -1,
        totalTimeMs: q['total-time'] ?? -1,
        setupTimeMs: q['setup-time'] ?? -1,
        ramTransferredBytes: q.ram?.transferred ?? 0,
        completedAtMs: Date.now()
      }
    }
    if (Date.now() > deadline) { dest.kill(); throw new Error(`migration still ${q.status} after ${MIGRATION_TIMEOUT_MS} ms`) }
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
  }
}

// Guest rounds as the host saw them: sequence number and arrival time of each "ok" line.
export function rounds (...guests: QemuGuest[]): Array<{ seq: number, atMs: number }> {
  const out: Array<{ seq: number, atMs: number }> = []
  for (const g of guests) {
    for (const l of g.serial) {
      const m = /UKAI-GUEST ok seq=(\d+) /.exec(l.text)
      if (m !== null) out.push({ seq: Number(m[1]), atMs: l.atMs })
    }
  }
  return out.sort((x, y) => x.seq - y.seq)
}

export interface RoundStats { rounds: number, medianMs: number, p99Ms: number, maxMs: number }

// Time between consecutive rounds whose end falls in [fromMs, toMs).
export function roundStats (rs: Array<{ seq: number, atMs: number }>, fromMs: number, toMs: number): RoundStats {
  const gaps: number[] = []
  for (let i = 1; i < rs.length; i++) {
    if (rs[i].seq !== rs[i - 1].seq + 1) continue
    if (rs[i].atMs >= fromMs && rs[i].atMs < toMs) gaps.push(rs[i].atMs - rs[i - 1].atMs)
  }
  gaps.sort((x, y) => x - y)
  const q = (p: number): number => gaps.length === 0 ? 0 : gaps[Math.min(gaps.length - 1, Math.floor(p * gaps.length))]
  return { rounds: gaps.length, medianMs: q(0.5), p99Ms: q(0.99), maxMs: gaps.length === 0 ? 0 : gaps[gaps.length - 1] }
}
