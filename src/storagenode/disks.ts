// The disks this node holds, in memory: per disk its directory (DATA/disks/<uuid>), which
// versions exist, the versions being created, its fence, and what a flush still has to make
// durable. Filled by the start-up scan (startup-scan.ts); a disk first named by a write or a
// fence gets its entry here, and its directory at its first version or fence file.
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { UkaiError } from '../errors'

// A data dir and its disk dirs: the node's user only; block and fence files are 0600.
export const DIR_MODE = 0o700

export interface DiskState {
  uuid: string
  dir: string
  dirExists: boolean
  versions: Map<number, number[]>        // block → ascending epochs
  creating: Map<string, Promise<void>>   // '<block>.<epoch>' → version being created
  fenceEpoch: number                     // newest lease epoch seen (rejects anything older)
  fenceDurable: Promise<void>            // resolves once fenceEpoch is on disk
  dirty: Set<string>                     // files written since the last flush
  dirDirty: boolean                      // entries created/removed since the last flush
  syncing: Set<Promise<void>>            // flushes in progress
  inflight: Set<Promise<unknown>>        // admitted mutations (fence waits for them)
}

export class DiskTable {
  private readonly disks = new Map<string, DiskState>()
  private closed = false

  constructor (
    private readonly nodeId: string,
    readonly disksDir: string,
    private readonly syncDir: (dir: string) => Promise<void>
  ) {}

  get (uuid: string): DiskState | undefined { return this.disks.get(uuid) }
  add (disk: DiskState): void { this.disks.set(disk.uuid, disk) }
  delete (uuid: string): void { this.disks.delete(uuid) }
  values (): IterableIterator<DiskState> { return this.disks.values() }

  newDisk (uuid: string): DiskState {
    return {
      uuid,
      dir: path.join(this.disksDir, uuid),
      dirExists: false,
      versions: new Map(),
      creating: new Map(),
      fenceEpoch: 0,
      fenceDurable: Promise.resolve(),
      dirty: new Set(),
      dirDirty: false,
      syncing: new Set(),
      inflight: new Set()
    }
  }

  // The disk a mutation or fence names, made known if it is new; refused once the store closes.
  diskFor (uuid: string): DiskState {
    if (this.closed) throw UkaiError.unavailable(`storage node ${this.nodeId} is shutting down`)
    let disk = this.disks.get(uuid)
    if (disk === undefined) {
      disk = this.newDisk(uuid)
      this.disks.set(uuid, disk)
    }
    return disk
  }

  async ensureDir (disk: DiskState): Promise<void> {
    if (disk.dirExists) return
    await fsp.mkdir(disk.dir, { recursive: true, mode: DIR_MODE })
    await this.syncDir(this.disksDir)  // the new disk directory itself must survive a crash
    disk.dirExists = true
  }

  close (): void { this.closed = true }
}

