// Loads the native addons scripts/build-native.sh builds into <repo>/build/ (see native/).
import * as path from 'node:path'
import { UkaiError } from './errors'
import { packageRoot } from './package-root'

// `relPath` below build/, e.g. 'fuse-native' or 'punch-hole/build/Release/punch_hole.node'.
export function loadNative<T> (relPath: string): T {
  const file = path.join(packageRoot(), 'build', relPath)
  try {
    return require(file) as T
  } catch (err) {
    throw UkaiError.internal(`native addon ${file} does not load (run scripts/setup.sh, which builds it): ${(err as Error).message}`)
  }
}
