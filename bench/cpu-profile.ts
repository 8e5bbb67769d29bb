// Summarising a V8 .cpuprofile (node --cpu-prof): where the samples landed, by function and by
// package, as percentages of all samples (idle included, so "(idle)" says how busy it was).
import fs from 'node:fs'
import path from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  hitCount?: number
  children?: number[]
}

interface CpuProfile { nodes: ProfileNode[], samples?: number[] }

export interface ProfileEntry { name: string, selfPercent: number }
export interface ProfileSummary { file: string, samples: number, topFunctions: ProfileEntry[], byPackage: ProfileEntry[] }

// node_modules/@grpc/grpc-js/build/src/x.js → @grpc/grpc-js; dist/src/vdisk/x.js → ukai:src/vdisk
function packageOf (url: string): string {
  if (url === '') return '(native/V8)'
  const nm = url.lastIndexOf('node_modules/')
  if (nm >= 0) {
    const parts = url.slice(nm + 'node_modules/'.length).split('/')
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]
  }
  if (url.startsWith('node:')) return 'node core'
  const m = /dist\/(src|bench)\/([^/]+)/.exec(url)
  if (m !== null) return `ukai:${m[1]}/${m[2]}`
  return url
}

function top (counts: Map<string, number>, total: number, n: number): ProfileEntry[] {
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, hits]) => ({ name, selfPercent: Math.round(hits / total * 1000) / 10 }))
}

export function summarizeCpuProfile (file: string, topN = 15): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile
  const byFunction = new Map<string, number>()
  const byPackage = new Map<string, number>()
  let total = 0
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0
    if (hits === 0) continue
    total += hits
    const { functionName, url, lineNumber } = node.callFrame
    const where = url === '' ? '' : ` ${path.basename(url)}:${lineNumber + 1}`
    const fn = `${functionName === '' ? '(anonymous)' : functionName}${where}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + hits)
    const pkg = url === '' ? (functionName.startsWith('(') ? functionName : '(native/V8)') : packageOf(url)
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + hits)
  }
  return { file, samples: total, topFunctions: top(byFunction, total || 1, topN), byPackage: top(byPackage, total || 1, topN) }
}

// The newest .cpuprofile in DIR, or null.
export function newestProfile (dir: string): string | null {
  if (!fs.existsSync(dir)) return null
  const files = fs.readdirSync(dir).filter(f => f.endsWith('.cpuprofile')).map(f => path.join(dir, f))
  files.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)
  return files[0] ?? null
}

if (require.main === module) {
  const file = process.argv[2]
  if (file === undefined) { process.stderr.write('usage: cpu-profile FILE.cpuprofile\n'); process.exit(2) }
  console.log(JSON.stringify(summarizeCpuProfile(file), null, 2))
}
