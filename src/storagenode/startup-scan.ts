// What the store does once, before the node serves: check the data dir is a writable directory,
// scan it (which versions exist, their allocation, every disk's fence; leftovers of interrupted
// clones, staged copies and fence writes removed), and make durable whatever a previous
// incarnation left dirty. After this the data path does no readdir or stat.
import { execFile } from 'node:child_process'
import * as fsp from 'node:fs/promises'
import * as path from 'node:path'
import { UkaiError } from '../errors'
import { DIR_MODE } from './disks'
import type { DiskTable } from './disks'
import { FENCE_FILE, readFenceFile } from './fencing'
import type { SpaceAccount } from './space'
import { SIDECAR_SUFFIX } from './page-checksums'
import { DISK_UUID_RE } from './store-checks'
import { insertSorted } from './versions'

const VERSION_FILE_RE = /^(\d+)\.(\d+)$/
// Bound on the start-up syncfs of the data dir, which writes back whatever a killed predecessor
// left dirty. Measured with 4,000 block files: 4-7 ms when clean (their scan takes 130-290 ms),
// 148 ms with 250 MiB of them never fsynced; GiBs of dirty data take seconds.
const START_SYNC_TIMEOUT_MS = 120_000

export async function checkDataDir (nodeId: string, dataDir: string, disksDir: string): Promise<void> {
  try {
    const st = await fsp.stat(dataDir)
    if (!st.isDirectory()) throw new Error('not a directory')
    // Block files are the disks' bytes: only the node's user (and agents running as it, for
    // short-circuit reads) may reach them, whatever the images' own modes (issue 12).
    await fsp.chmod(dataDir, DIR_MODE)
    await fsp.mkdir(disksDir, { recursive: true, mode: DIR_MODE })
    await fsp.chmod(disksDir, DIR_MODE)
    // access(W_OK) lies for root and read-only mounts; a real write does not.
    const probe = path.join(dataDir, `.probe-${process.pid}`)
    await fsp.writeFile(probe, 'ok')
    await fsp.unlink(probe)
  } catch (err) {
    throw new UkaiError('DATA_DIR', `storage node ${nodeId}: data dir ${dataDir} is missing or not writable: ${(err as Error).message}`, err)
  }
}

// A version file with no checksum sidecar predates checksums: `markUnverified` (served unchecked
// until the scrub adopts it). A sidecar with no version file is a leftover of a crash: removed.
export async function scanDataDir (disks: Pick<DiskTable, 'disksDir' | 'newDisk' | 'add'>, space: Pick<SpaceAccount, 'setAlloc'>, markUnverified: (file: string) => void): Promise<void> {
  for (const uuid of await fsp.readdir(disks.disksDir)) {
    if (!DISK_UUID_RE.test(uuid)) continue
    const disk = disks.newDisk(uuid)
    disk.dirExists = true
    const names = await fsp.readdir(disk.dir)
    const present = new Set(names)
    for (const name of names) {
      const full = path.join(disk.dir, name)
      if (name.endsWith('.tmp')) { await fsp.rm(full, { force: true }); continue }  // an interrupted clone or fence write
      if (name === FENCE_FILE) {
        disk.fenceEpoch = await readFenceFile(full)
        continue
      }
      if (name.endsWith(SIDECAR_SUFFIX)) {
        if (!VERSION_FILE_RE.test(name.slice(0, -SIDECAR_SUFFIX.length)) || !present.has(name.slice(0, -SIDECAR_SUFFIX.length))) await fsp.rm(full, { force: true })
        continue
      }
      const m = VERSION_FILE_RE.exec(name)
      if (m === null) continue
      if (!present.has(name + SIDECAR_SUFFIX)) markUnverified(full)
      const block = Number(m[1])
      const epoch = Number(m[2])
      const st = await fsp.stat(full)
      space.setAlloc(full, st.blocks * 512)
      insertSorted(disk.versions, block, epoch)
    }
    disks.add(disk)
  }
}

// Before the node serves: everything a previous incarnation wrote is made durable. A node
// killed (-9) before an agent's fsync forgets which files were dirty, so that fsync would
// succeed here without syncing them; the bytes are in the page cache, and a power loss before
// writeback would lose them. syncfs(2) (coreutils `sync -f`; Node has no binding) writes back
// the data dir's file system in one call and reports writeback errors (Linux >= 5.8); fsyncing
// every block file would cost an open and an fsync per file, plus every directory, for the same
// effect. Its price: other dirty data on the same file system is written back too.
// `countFsync` counts it as an fsync (and fails it while a test's fault file exists).
export async function syncDataDir (nodeId: string, dataDir: string, countFsync: () => void): Promise<void> {
  try {
    countFsync()
    await new Promise<void>((resolve, reject) => {
      execFile('sync', ['-f', dataDir], { timeout: START_SYNC_TIMEOUT_MS }, (err, _stdout, stderr) => {
        if (err === null) resolve()
        else reject(new Error(`sync -f ${dataDir}: ${stderr.trim() !== '' ? stderr.trim() : err.message}`))
      })
    })
  } catch (err) {
    throw new UkaiError('DATA_DIR', `storage node ${nodeId}: cannot make data dir ${dataDir} durable at start: ${(err as Error).message}`, err)
  }
}
