// Where this installation of UKAI lives and which version it is. The same code runs from src/
// (tests, under the TypeScript loader) and from dist/src/ (daemons, the CLI), at different depths:
// walk up from here to the package.json named "ukai". The one place that does (native addons,
// the .proto file, the libvirt hook template and the version all hang off it).
import * as fs from 'node:fs'
import * as path from 'node:path'

let cached: { root: string, version: string } | undefined

function find (): { root: string, version: string } {
  if (cached !== undefined) return cached
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json')
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'ukai') return (cached = { root: dir, version: pkg.version ?? '0.0.0' })
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find UKAI's package.json above ${__dirname}`)
  }
}

export function packageRoot (): string { return find().root }

// package.json's version, e.g. '0.1.0': `ukai --version`, every daemon log line, `health --json`.
export function ukaiVersion (): string { return find().version }
