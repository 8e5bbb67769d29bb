// The room rule: every import in src/ goes from a room to one the table in docs/rooms.json allows
// (docs/architecture.md "Rooms" shows it). Imports are read with TypeScript's own pre-parser, so
// multi-line imports, `export … from`, `import()` and `require()` count and comments do not.
// Also checked: every room of src/ is in the table, the table's direction has no cycle, each
// door and exception is still needed, and the doc's table says the same as the JSON. Within an
// allowed room, single files may be closed to a room ('closed': e.g. src/relocate takes the
// placement map, block locks and node pool, never the disk engine's class).
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import ts from 'typescript'

interface FileRule { from: string, to: string, why: string }
interface ClosedFile { room: string, file: string, why: string }
interface RoomTable { rooms: Record<string, string[]>, doors: FileRule[], exceptions: FileRule[], closed?: ClosedFile[] }

const ROOT = path.join(__dirname, '..')
const SRC = path.join(ROOT, 'src')
const table = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs', 'rooms.json'), 'utf8')) as RoomTable

function sourceFiles (dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap(e => {
    const p = path.join(dir, e.name)
    return e.isDirectory() ? sourceFiles(p) : (p.endsWith('.ts') ? [p] : [])
  })
}

// A folder of src/ is a room; so is a file at its root (errors.ts → 'errors').
function roomOf (file: string): string {
  const parts = path.relative(SRC, file).split(path.sep)
  return parts.length === 1 ? parts[0].replace(/(\.d)?\.ts$/, '') : parts[0]
}

function resolveImport (from: string, spec: string): string {
  const base = path.resolve(path.dirname(from), spec)
  for (const candidate of [base + '.ts', path.join(base, 'index.ts'), base]) if (fs.existsSync(candidate)) return candidate
  return base
}

interface Edge { file: string, line: number, spec: string, to: string, target: string }

function importsOf (file: string): Edge[] {
  const text = fs.readFileSync(file, 'utf8')
  const rel = path.relative(ROOT, file)
  return ts.preProcessFile(text, true, true).importedFiles
    .filter(im => im.fileName.startsWith('.'))
    .map(im => {
      const target = resolveImport(file, im.fileName)
      const to = target.startsWith(SRC + path.sep) ? roomOf(target) : `outside src (${path.relative(ROOT, target)})`
      return { file: rel, line: text.slice(0, im.pos).split('\n').length, spec: im.fileName, to, target: path.relative(ROOT, target) }
    })
}

const files = sourceFiles(SRC)
const edges = files.flatMap(f => importsOf(f).map(e => ({ ...e, from: roomOf(f) })))

t.test('every room of src/ is in the table', async (t) => {
  const rooms = [...new Set(files.map(roomOf))].sort()
  t.same(rooms.filter(r => !(r in table.rooms)), [], 'rooms missing from docs/rooms.json')
  t.same(Object.keys(table.rooms).filter(r => !rooms.includes(r)), [], 'rooms in docs/rooms.json that src/ no longer has')
  for (const [room, allowed] of Object.entries(table.rooms)) {
    t.same(allowed.filter(r => !(r in table.rooms)), [], `${room} may import only rooms that exist`)
  }
})

t.test('every import goes where the table allows', async (t) => {
  const used = new Set<FileRule>()
  const broken: string[] = []
  for (const e of edges) {
    if (e.from === e.to || table.rooms[e.from]?.includes(e.to) === true) continue
    const rule = [...table.doors, ...table.exceptions].find(r => r.from === e.file && r.to === e.to)
    if (rule !== undefined) { used.add(rule); continue }
    broken.push(`${e.file}:${e.line} (${e.from}) imports '${e.spec}' (${e.to})`)
  }
  t.same(broken, [], 'imports the room table does not allow (move the piece to the room it belongs in, or change docs/rooms.json and docs/architecture.md together)')
  const stale = [...table.doors, ...table.exceptions].filter(r => !used.has(r)).map(r => `${r.from} → ${r.to}`)
  t.same(stale, [], 'doors and exceptions nothing needs any more: remove them from docs/rooms.json and docs/architecture.md')
})

t.test('no room imports a file closed to it', async (t) => {
  const closed = table.closed ?? []
  for (const c of closed) t.ok(fs.existsSync(path.join(ROOT, c.file)), `closed file ${c.file} exists`)
  const broken = edges.filter(e => closed.some(c => c.room === e.from && c.file === e.target))
    .map(e => `${e.file}:${e.line} (${e.from}) imports '${e.spec}' (${e.target}), closed to ${e.from}: ${closed.find(c => c.room === e.from && c.file === e.target)?.why ?? ''}`)
  t.same(broken, [], 'imports of files closed to the importing room (docs/rooms.json "closed")')
})

t.test('the direction has no cycle', async (t) => {
  const state = new Map<string, 'visiting' | 'done'>()
  const cycles: string[] = []
  const visit = (room: string, trail: string[]): void => {
    if (state.get(room) === 'done') return
    if (state.get(room) === 'visiting') { cycles.push([...trail.slice(trail.indexOf(room)), room].join(' → ')); return }
    state.set(room, 'visiting')
    for (const next of table.rooms[room] ?? []) visit(next, [...trail, room])
    state.set(room, 'done')
  }
  for (const room of Object.keys(table.rooms)) visit(room, [])
  t.same(cycles, [])
})

t.test('docs/architecture.md shows the same table', async (t) => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'architecture.md'), 'utf8')
  const m = /<!-- rooms:begin -->([\s\S]*?)<!-- rooms:end -->/.exec(doc)
  if (m === null) { t.fail('docs/architecture.md has no <!-- rooms:begin --> … <!-- rooms:end --> table'); return }
  const shown: Record<string, string[]> = {}
  for (const line of m[1].split('\n')) {
    const cells = line.split('|').map(c => c.trim())
    const room = /^`([a-z-]+)`$/.exec(cells[1] ?? '')
    if (room === null) continue
    shown[room[1]] = cells[2] === '—' ? [] : cells[2].split(',').map(s => s.trim().replace(/`/g, '')).sort()
  }
  const want = Object.fromEntries(Object.entries(table.rooms).map(([r, allowed]) => [r, [...allowed].sort()]))
  t.same(shown, want)
})
