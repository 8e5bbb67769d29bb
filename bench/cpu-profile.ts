// Summarising a V8 .cpuprofile (node --cpu-prof): where the samples landed, by function and by
// package, as percentages of all samples (idle included, so "(idle)" says how busy it was); and,
// for one function, whose calls its self time came from (`--callers NAME`).
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

function frameName (n: ProfileNode): string {
  const { functionName, url, lineNumber } = n.callFrame
  return `${functionName === '' ? '(anonymous)' : functionName}${url === '' ? '' : ` ${path.basename(url)}:${lineNumber + 1}`}`
}

// Who spends the self time of the functions named `name` (a substring of "fn file:line"): their
// samples summed by the chain of their `depth` nearest callers, as percentages of all samples.
// Self time alone says a copy is costly; this says whose copy it is.
export function callersOf (file: string, name: string, depth = 3, topN = 15): ProfileEntry[] {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile
  const parent = new Map<number, ProfileNode>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const byChain = new Map<string, number>()
  let total = 0
  for (const n of profile.nodes) {
    const hits = n.hitCount ?? 0
    total += hits
    if (hits === 0 || !frameName(n).includes(name)) continue
    const chain: string[] = [frameName(n)]
    for (let p = parent.get(n.id); p !== undefined && chain.length <= depth; p = parent.get(p.id)) chain.push(frameName(p))
    const key = chain.join(' ← ')
    byChain.set(key, (byChain.get(key) ?? 0) + hits)
  }
  return top(byChain, total || 1, topN)
}

if (require.main === module) {
  const [file, flag, name, depth] = process.argv.slice(2)
  if (file === undefined || (flag !== undefined && (flag !== '--callers' || name === undefined))) {
    process.stderr.write('usage: cpu-profile FILE.cpuprofile [--callers NAME [DEPTH]]\n')
    process.exit(2)
  }
  if (flag === undefined) console.log(JSON.stringify(summarizeCpuProfile(file), null, 2))
  else for (const e of callersOf(file, name, depth === undefined ? 3 : Number(depth))) console.log(`${e.selfPercent.toFixed(1).padStart(5)}%  ${e.name}`)
}
