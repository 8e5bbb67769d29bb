// Holes on the FUSE mount as the usual tools see them: lseek(2) SEEK_DATA/SEEK_HOLE on a disk
// file (answered by our fuse-native build's FUSE_LSEEK interception, docs/architecture.md) agree
// with a model of the blocks written and trimmed; `qemu-img map` reports data only there;
// `cp --sparse=always`/`=auto` and `qemu-img convert` make sparse copies equal byte for byte and
// read only the data blocks through the mount (the agent's read counter: holes are skipped, not
// read as zeros); a snapshot file under .snapshots reports its own blocks, not the head's later
// writes.
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { freePort } from '../src/dev/free-port'
import { fuseUnavailable, makeTempDir, missingCli, startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'

const exec = promisify(execFile)
const KiB = 1024
const MiB = 1024 * KiB
const BLOCK = MiB  // the test disks' block size: holes are whole blocks

const qemuMissing = (): string | null => {
  for (const c of ['qemu-img', 'python3', 'cp', 'du']) {
    try { execFileSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }) } catch { return `${c} is not installed` }
  }
  return null
}
const skip = missingCli('mount') ?? fuseUnavailable() ?? qemuMissing()

// os.lseek with SEEK_DATA and SEEK_HOLE at each offset, in one python3 run: [data, hole] per
// offset, each the offset answered or the errno name.
const PROBE = `
import errno, json, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
out = []
for off in json.loads(sys.argv[2]):
    row = []
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try:
            row.append(os.lseek(fd, off, whence))
        except OSError as e:
            row.append(errno.errorcode[e.errno])
    out.append(row)
print(json.dumps(out))
`

async function probe (file: string, offsets: number[]): Promise<Array<[number | string, number | string]>> {
  const { stdout } = await exec('python3', ['-c', PROBE, file, JSON.stringify(offsets)])
  return JSON.parse(stdout)
}

// What lseek must answer for a disk of `size` bytes whose blocks in `data` hold data.
function expected (data: Set<number>, size: number, off: number): [number | string, number | string] {
  if (off < 0 || off >= size) return ['ENXIO', 'ENXIO']
  const isData = (at: number): boolean => data.has(Math.floor(at / BLOCK))
  let d: number | string = 'ENXIO'
  for (let at = off; at < size; at = (Math.floor(at / BLOCK) + 1) * BLOCK) if (isData(at)) { d = at; break }
  let h = size
  for (let at = off; at < size; at = (Math.floor(at / BLOCK) + 1) * BLOCK) if (!isData(at)) { h = at; break }
  return [d, h]
}

// A negative offset, block starts, the bytes either side, a few odd offsets, the last byte, the
// end and past it.
function offsetsFor (size: number): number[] {
  const out = new Set<number>([0, 1, size - 1, size, size + 4096, 3 * BLOCK + 12345])
  for (let b = 0; b * BLOCK < size; b++) {
    out.add(b * BLOCK)
    out.add(b * BLOCK + BLOCK / 2)
    if (b > 0) out.add(b * BLOCK - 1)
  }
  return [-1, ...[...out].sort((x, y) => x - y)]
}

async function checkSeeks (t: Test, file: string, data: Set<number>, size: number, what: string): Promise<void> {
  const offsets = offsetsFor(size)
  const got = await probe(file, offsets)
  const want = offsets.map(o => expected(data, size, o))
  const bad = offsets.map((o, i) => ({ o, got: got[i], want: want[i] })).filter(r => r.got[0] !== r.want[0] || r.got[1] !== r.want[1])
  t.same(bad, [], `${what}: SEEK_DATA/SEEK_HOLE at ${offsets.length} offsets agree with the model (data blocks ${[...data].sort((a, b) => a - b).join(',') || 'none'})`)
}

async function writeAt (file: string, chunks: Array<[number, Buffer]>): Promise<void> {
  const fh = await fs.promises.open(file, 'r+')
  try {
    for (const [at, buf] of chunks) await fh.write(buf, 0, buf.length, at)
    await fh.sync()
  } finally {
    await fh.close()
  }
}

// Bytes the agent has answered reads of, for one disk (its Prometheus endpoint).
async function bytesRead (metrics: string, disk: string): Promise<number> {
  const text = await (await fetch(`http://${metrics}/metrics`)).text()
  const m = new RegExp(`^ukai_disk_read_bytes_total\\{[^}]*disk="${disk}"[^}]*\\} (\\S+)$`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

async function duBytes (file: string): Promise<number> {
  return (await fs.promises.stat(file)).blocks * 512
}

// qemu-img map's extents, neighbours of equal kind merged: [start, length, data].
async function qemuMap (file: string): Promise<Array<[number, number, boolean]>> {
  const { stdout } = await exec('qemu-img', ['map', '--output=json', '-f', 'raw', file])
  const out: Array<[number, number, boolean]> = []
  for (const e of JSON.parse(stdout) as Array<{ start: number, length: number, data: boolean }>) {
    const last = out[out.length - 1]
    if (last !== undefined && last[2] === e.data && last[0] + last[1] === e.start) last[1] += e.length
    else out.push([e.start, e.length, e.data])
  }
  return out
}

function extentsOf (data: Set<number>, size: number): Array<[number, number, boolean]> {
  const out: Array<[number, number, boolean]> = []
  for (let b = 0; b * BLOCK < size; b++) {
    const d = data.has(b)
    const last = out[out.length - 1]
    if (last !== undefined && last[2] === d) last[1] += BLOCK
    else out.push([b * BLOCK, BLOCK, d])
  }
  return out
}

t.test('SEEK_DATA/SEEK_HOLE on the mount', { skip: skip ?? false }, async (t) => {
  const metrics = `127.0.0.1:${await freePort()}`
  const c = await startCluster(t, { sites: 1, nodesPerSite: 1, agentArgs: ['--metrics-listen', metrics] })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const create = async (name: string, size: string): Promise<string> => {
    const res = await runCli(['disk', 'create', name, '--size', size, '--block-size', '1M', '--replicas', '1'], { zk })
    t.equal(res.code, 0, res.stderr)
    return path.join(a.mountPoint, name)
  }
  const rand = rng(46)

  t.test('a disk never written is one hole', async (t) => {
    const file = await create('sparse', '8M')
    await checkSeeks(t, file, new Set(), 8 * MiB, 'sparse')
    t.same(await qemuMap(file), [[0, 8 * MiB, false]], 'qemu-img map: no data')
  })

  t.test('a disk written whole is all data', async (t) => {
    const file = await create('full', '8M')
    await writeAt(file, [[0, randomBytes(rand, 8 * MiB)]])
    await checkSeeks(t, file, new Set([0, 1, 2, 3, 4, 5, 6, 7]), 8 * MiB, 'full')
    t.same(await qemuMap(file), [[0, 8 * MiB, true]], 'qemu-img map: all data')
  })

  // The agent reuses a head's written blocks for a moment (vdisk/allocation.ts); a write or
  // TRIM on this host must show at once, also to a handle that asked just before.
  t.test('a write and a TRIM are seen at once by a handle that already asked', async (t) => {
    const file = await create('fresh', '4M')
    const { stdout } = await exec('python3', ['-c', `
import ctypes, errno, json, os, sys
B = 1 << 20
r = os.open(sys.argv[1], os.O_RDONLY)
w = os.open(sys.argv[1], os.O_RDWR)
def seek(whence):
    try:
        return os.lseek(r, 0, whence)
    except OSError as e:
        return errno.errorcode[e.errno]
out = [seek(os.SEEK_DATA)]
os.pwrite(w, b'x' * 4096, 2 * B)
out.append(seek(os.SEEK_DATA))
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
if libc.fallocate(w, 3, 2 * B, B) != 0: raise OSError(ctypes.get_errno(), 'fallocate')
out.append(seek(os.SEEK_DATA))
print(json.dumps(out))
`, file])
    t.same(JSON.parse(stdout), ['ENXIO', 2 * MiB, 'ENXIO'], 'SEEK_DATA from 0: none, then the block just written, then none after its TRIM')
  })

  t.test('holes between written blocks, a trimmed block, a snapshot', async (t) => {
    const size = 16 * MiB
    const file = await create('mixed', '16M')
    const model = Buffer.alloc(size)
    const put = (at: number, buf: Buffer): [number, Buffer] => { buf.copy(model, at); return [at, buf] }
    // Blocks 1, 2, 9 and 15 whole, 4 KiB inside block 5 (its whole block counts), block 12 written
    // with zeros (data: a version exists, though it reads as zeros).
    await writeAt(file, [
      put(1 * MiB, randomBytes(rand, 2 * MiB)),
      put(5 * MiB + 8 * KiB, randomBytes(rand, 4 * KiB)),
      put(9 * MiB, randomBytes(rand, MiB)),
      put(12 * MiB, Buffer.alloc(MiB)),
      put(15 * MiB, randomBytes(rand, MiB))
    ])
    await checkSeeks(t, file, new Set([1, 2, 5, 9, 12, 15]), size, 'written')

    // TRIM of block 2 whole drops its version: a hole again.
    await exec('fallocate', ['--punch-hole', '--offset', String(2 * MiB), '--length', String(MiB), file])
    model.fill(0, 2 * MiB, 3 * MiB)
    const data = new Set([1, 5, 9, 12, 15])
    await checkSeeks(t, file, data, size, 'after trimming block 2')
    t.equal(sha256(await fs.promises.readFile(file)), sha256(model), 'the disk reads as the model')

    t.same(await qemuMap(file), extentsOf(data, size), 'qemu-img map: data exactly at the written blocks')

    const tmp = makeTempDir(t, 'seek-copies')
    const written = 3 * MiB + 4 * KiB  // non-zero bytes: blocks 1, 9, 15 and the 4 KiB in block 5
    const dataBytes = data.size * BLOCK
    const sparseCopy = async (what: string, cmd: string, args: string[], dest: string): Promise<void> => {
      const before = await bytesRead(metrics, 'mixed')
      await exec(cmd, args)
      const read = await bytesRead(metrics, 'mixed') - before
      t.ok(read > 0 && read <= dataBytes, `${what}: read ${read} bytes of the ${size}-byte disk through the mount (its data blocks: ${dataBytes})`)
      t.equal(sha256(await fs.promises.readFile(dest)), sha256(model), `${what}: equal byte for byte`)
      const du = await duBytes(dest)
      t.ok(du >= written && du <= written + 1 * MiB, `${what}: sparse (${du} bytes allocated for ${written} written)`)
    }
    const dest = (n: string): string => path.join(tmp, n)
    await sparseCopy('cp --sparse=always', 'cp', ['--sparse=always', file, dest('always.raw')], dest('always.raw'))
    await sparseCopy('cp --sparse=auto', 'cp', ['--sparse=auto', file, dest('auto.raw')], dest('auto.raw'))
    await sparseCopy('qemu-img convert -O raw', 'qemu-img', ['convert', '-f', 'raw', '-O', 'raw', file, dest('convert.raw')], dest('convert.raw'))

    // A snapshot keeps the blocks it had; the head's later write is not in it.
    const snap = await runCli(['snapshot', 'create', 'mixed@s1'], { zk })
    t.equal(snap.code, 0, `snapshot create: ${snap.stderr}`)
    await writeAt(file, [[7 * MiB, randomBytes(rand, MiB)]])
    await checkSeeks(t, file, new Set([...data, 7]), size, 'head after a write at block 7')
    const snapFile = path.join(a.mountPoint, '.snapshots', 'mixed@s1')
    await checkSeeks(t, snapFile, data, size, 'the snapshot file')
    t.same(await qemuMap(snapFile), extentsOf(data, size), 'qemu-img map of the snapshot file')

    // Several processes seeking at once (libfuse's worker threads each answer FUSE_LSEEK on their
    // own) while the file is read: every answer right, the read intact.
    const head = new Set([...data, 7])
    const [, , , , , reread] = await Promise.all([
      ...Array.from({ length: 4 }, async (_, i) => await checkSeeks(t, file, head, size, `concurrent seeker ${i + 1}`)),
      checkSeeks(t, snapFile, data, size, 'concurrent seeker on the snapshot'),
      fs.promises.readFile(snapFile)
    ])
    t.equal(sha256(reread as Buffer), sha256(model), 'the snapshot read during the seeks equals the model (the head before block 7)')
  })
})
