// The node's incarnation, in every write, discard and flush answer (io-handler.ts): what the
// agent compares to tell a flush that covers the writes a node acknowledged from one that cannot
// (src/vdisk/dirty-flush.ts). Acknowledged writes live in the kernel's page cache until a flush:
// they survive the node *process* dying (its next start syncs the data dir before serving:
// startup-scan.ts), not the *host* crashing. So the incarnation is the host's boot id
// (/proc/sys/kernel/random/boot_id, new at every boot): a process restart keeps it (the flush
// after it does cover the writes: test/vdisk-flush-behind.test.ts), a reboot changes it.
// A per-process random id was the first version: it failed every flush after a plain restart,
// whose writes the startup sync had made durable (a 1-replica disk's fsync then failed forever).
// Where the boot id cannot be read, a random id per process: conservative (a restart then counts
// as a crash: replicas marked stale, a lone replica's flush fails), never optimistic.
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'

// Tests only: the node starts as if its host had booted under this id (a host crash is
// simulated by killing the node, putting its files back as before the write, and restarting
// it with another id: test/vdisk-node-incarnation.test.ts).
export const FAULT_BOOT_ID_ENV = 'UKAI_FAULT_BOOT_ID'

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id'

export function nodeIncarnation (): string {
  const fault = process.env[FAULT_BOOT_ID_ENV]
  if (fault !== undefined && fault !== '') return fault
  try {
    const id = fs.readFileSync(BOOT_ID_FILE, 'utf8').trim()
    if (id !== '') return id
  } catch {}
  return `process-${randomBytes(8).toString('hex')}`
}
