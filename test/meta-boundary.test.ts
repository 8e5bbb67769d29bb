// The meta boundary (issue 10): only src/meta talks to ZooKeeper. Outside it no file imports the
// ZooKeeper library or our client over it, reaches for a MetaStore's client (`.zk`, `zkOf`), or
// spells a znode path or codec — src/meta/schema.ts is the one file that does. Tests are exempt:
// the meta room's own tests and the fault proxies look at ZooKeeper directly. Not metadata, so
// not meta's: src/dev's private ZooKeeper server (the JVM it spawns, its zoo.cfg, the four-letter
// words `ruok`/`stat`/`srvr` that tell it serves and who leads an ensemble).
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'

const ROOT = path.join(__dirname, '..')
const CHECKED_DIRS = ['src', 'bench']
const META_DIR = path.join('src', 'meta')

// What a file outside src/meta must not contain, and why.
const RULES: Array<{ re: RegExp, why: string }> = [
  { re: /from\s+['"]node-zookeeper-client['"]|require\(\s*['"]node-zookeeper-client['"]\s*\)/, why: 'imports the ZooKeeper library' },
  { re: /from\s+['"][./]*\/?meta\/zk-[a-z-]+['"]/, why: 'imports the ZooKeeper client of src/meta (use MetaStore methods)' },
  { re: /\bzkOf\s*\(/, why: "reaches for a MetaStore's ZooKeeper client" },
  // A ZooKeeper client call or event on a `.zk` member; `opts.zk` / `info.zk.connectString` (a
  // connect string, a dev cluster's process record) are not clients.
  { re: /\.zk\s*\.\s*(on|once|off|emit|get|getOrNull|exists|children|create|mkdirp|set|remove|multi|ready|close|isConnected|sessionId|sessionGeneration)\b/, why: 'touches a ZooKeeper client through `.zk`' },
  { re: /\[\s*['"]zk['"]\s*\]/, why: 'reaches for a private `zk` member' },
  { re: /['"`]\/ukai(\/|['"`])/, why: 'spells a ZooKeeper path (src/meta/schema.ts owns them)' },
  { re: /\b(encodeJson|decodeJson|encodeSegment|decodeSegment)\b/, why: 'uses a znode codec (src/meta/schema.ts owns them)' }
]

function tsFiles (dir: string): string[] {
  const out: string[] = []
  for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...tsFiles(rel))
    else if (e.name.endsWith('.ts')) out.push(rel)
  }
  return out
}

function violations (file: string, text: string): string[] {
  const out: string[] = []
  text.split('\n').forEach((line, i) => {
    for (const r of RULES) if (r.re.test(line)) out.push(`${file}:${i + 1}: ${r.why}: ${line.trim()}`)
  })
  return out
}

t.test('no file outside src/meta talks to ZooKeeper', async t => {
  const files = CHECKED_DIRS.flatMap(tsFiles).filter(f => !f.startsWith(META_DIR + path.sep))
  t.ok(files.length > 50, `checked ${files.length} files`)
  const found = files.flatMap(f => violations(f, fs.readFileSync(path.join(ROOT, f), 'utf8')))
  t.same(found, [], 'no raw ZooKeeper use outside src/meta')
})

t.test('the rules catch what they are for', async t => {
  const bad = [
    "import zookeeper from 'node-zookeeper-client'",
    "import { ZkClient } from '../meta/zk-client'",
    "this.meta.zk.on('session', () => {})",
    'await meta.zk.getOrNull(p)',
    'if (meta.zk.isConnected) go()',
    'await zkOf(meta).exists(p)',
    "const zk = meta['zk']",
    "const p = '/ukai/disks/' + name",
    'const rec = decodeJson<LeaseRecord>(data, what)'
  ]
  for (const line of bad) t.not(violations('x.ts', line).length, 0, line)
  const fine = [
    "execFileSync('ukai', ['--zk', opts.zk])",
    'show(`export UKAI_ZK=${info.zk.connectString}`)',
    'if (cfg.zk === \'\') fail()',
    'meta.onSession(() => reload())',
    "const mount = '/var/lib/ukai/mnt'"
  ]
  for (const line of fine) t.same(violations('x.ts', line), [], line)
})
