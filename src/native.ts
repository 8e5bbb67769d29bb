// Loads the native addons scripts/build-native.sh builds into <repo>/build/ (see native/).
// The same path works from src/ (tests) and dist/src/ (daemons): walk up to package.json.
import * as fs from 'node:fs'
import * as path from 'node:path'
import { UkaiError } from './errors'

function repoRoot (): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'native'))) return dir
    if (path.dirname(dir) === dir) throw UkaiError.internal(`cannot find the UKAI source tree above ${__dirname}`)
  }
}

// `relPath` below build/, e.g. 'fuse-native' or 'punch-hole/build/Release/punch_hole.node'.
export function loadNative<T> (relPath: string): T {
  const file = path.join(repoRoot(), 'build', relPath)
  try {
    return require(file) as T
  } catch (err) {
    throw UkaiError.internal(`native addon ${file} does not load (run scripts/setup.sh, which builds it): ${(err as Error).message}`)
  }
}
