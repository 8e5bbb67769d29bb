// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) through the addon in native/punch-hole:
// a discarded range reads as zeros and its pages go back to the filesystem. Node's fs has no
// fallocate. Filesystems that cannot punch (EOPNOTSUPP) make the caller write zeros instead.
import { loadNative } from '../native'

interface PunchHoleAddon { punchHole: (fd: number, offset: number, length: number) => void }

let addon: PunchHoleAddon | undefined

// Loaded at storage-node start, so a missing build fails the daemon, not its first discard.
export function loadPunchHole (): void {
  addon ??= loadNative<PunchHoleAddon>('punch-hole/build/Release/punch_hole.node')
}

// True when the hole was punched; false when this filesystem cannot (the caller zero-fills).
export function punchHole (fd: number, offset: number, length: number): boolean {
  loadPunchHole()
  try {
    (addon as PunchHoleAddon).punchHole(fd, offset, length)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EOPNOTSUPP' || code === 'ENOSYS') return false
    throw err
  }
}
