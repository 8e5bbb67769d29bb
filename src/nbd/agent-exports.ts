// What an NBD export is, and the agent's disks as exports. An export goes through the same Agent
// open/handle API as the FUSE file: one disk engine per disk on this host whoever opened it
// (FUSE, NBD, several connections), so one lease, one fencing rule and one flush cover them all.
// A disk's export is opened without the write intent FUSE's O_RDWR open carries: the lease is
// taken at its first write (a free one at once, a held one by hand-over), so `qemu-img info` or a
// destination QEMU still waiting for a migration takes nothing. Snapshots (DISK@SNAP) export
// read-only.
import { UkaiError, isUkaiError } from '../errors'
import { Agent } from '../agent/agent'
import type { DiskIoSink } from '../agent/io-sink'
import type { AllocationSource } from '../vdisk/allocation'

export interface ExportInfo { sizeBytes: number, readOnly: boolean }

// One open export, as a session uses it. Every method may throw a UkaiError.
export interface NbdExport {
  readonly name: string
  readonly sizeBytes: number      // as announced at open; requests are checked against it
  readonly readOnly: boolean
  read: (offset: number, length: number) => Promise<Buffer>
  write: (offset: number, data: Buffer) => Promise<void>
  // Every write acknowledged before the call, on any handle of the disk on this host, is durable.
  flush: () => Promise<void>
  discard: (offset: number, length: number) => Promise<void>
  allocation: AllocationSource
  close: () => Promise<void>
}

// The exports a server offers, by name.
export interface NbdExportSource {
  names: () => string[]                                  // disks and their snapshots, sorted
  describe: (name: string) => Promise<ExportInfo | null> // null: no such export
  open: (name: string) => Promise<NbdExport | null>
}

export class AgentExports implements NbdExportSource {
  // `io`: told of every disk read, write and flush answered (the metrics, as for the FUSE file).
  constructor (private readonly agent: Agent, private readonly io?: DiskIoSink) {}

  names (): string[] { return [...this.agent.listDisks(), ...this.agent.listSnapshotFiles()].sort() }

  async describe (name: string): Promise<ExportInfo | null> {
    return await orNull(async () => {
      if (name.includes('@')) return { sizeBytes: (await this.agent.statSnapshot(name)).sizeBytes, readOnly: true }
      return { sizeBytes: (await this.agent.stat(name)).sizeBytes, readOnly: false }
    })
  }

  async open (name: string): Promise<NbdExport | null> {
    return await orNull(async () => name.includes('@') ? await this.openSnapshot(name) : await this.openDisk(name))
  }

  private async openDisk (name: string): Promise<NbdExport> {
    const agent = this.agent
    const io = this.io
    // Writable, so a lease freed while the export is open is taken (a migration's destination),
    // but a free one is not taken at the connection: only at the first write.
    const fh = await agent.openDisk(name, true, { takeFreeLeaseNow: false })
    const disk = agent.disk(fh)
    let closed = false
    return {
      name,
      sizeBytes: disk.sizeBytes,
      readOnly: false,
      read: async (offset, length) => {
        const t0 = io === undefined ? 0 : performance.now()
        let data: Buffer
        try { data = await agent.disk(fh).read(offset, length) } catch (err) { io?.failed(name, 'read'); throw err }
        io?.read(name, data.length, t0)
        return data
      },
      write: async (offset, data) => {
        const t0 = io === undefined ? 0 : performance.now()
        try { await agent.disk(fh).write(offset, data) } catch (err) { io?.failed(name, 'write'); throw err }
        io?.write(name, data.length, t0)
      },
      flush: async () => {
        const t0 = io === undefined ? 0 : performance.now()
        try { await agent.disk(fh).flush() } catch (err) { io?.failed(name, 'flush'); throw err }
        io?.flush(name, t0)
      },
      discard: async (offset, length) => await agent.disk(fh).discard(offset, length),
      allocation: agent.allocation(fh),
      close: async () => {
        if (closed) return
        closed = true
        await agent.release(fh)
      }
    }
  }

  private async openSnapshot (ref: string): Promise<NbdExport> {
    const agent = this.agent
    const snap = await agent.statSnapshot(ref)
    const fh = await agent.openSnapshot(ref, false)
    const readOnly = async (): Promise<never> => { throw new UkaiError('READ_ONLY', `snapshot ${ref} is read-only`) }
    let closed = false
    return {
      name: ref,
      sizeBytes: snap.sizeBytes,
      readOnly: true,
      read: async (offset, length) => await agent.reader(fh).read(offset, length),
      write: readOnly,
      discard: readOnly,
      flush: async () => {}, // nothing to make durable: committed versions are
      allocation: agent.allocation(fh),
      close: async () => {
        if (closed) return
        closed = true
        await agent.release(fh)
      }
    }
  }
}

// An unknown disk or snapshot, or a name no disk can have, is "no such export".
async function orNull<T> (fn: () => Promise<T>): Promise<T | null> {
  try {
    return await fn()
  } catch (err) {
    if (isUkaiError(err, 'NOT_FOUND') || isUkaiError(err, 'BAD_ARGUMENT')) return null
    throw err
  }
}
