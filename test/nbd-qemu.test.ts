// The agent's NBD export seen by QEMU's own tools (qemu-img, qemu-io, qemu-nbd): a socket per
// disk that follows the disk's life and mode, list and info over the socket and TCP, byte-for-byte
// writes and reads against a model cross-checked through the FUSE file of the same disk, holes in
// `qemu-img map` (per disk block), discard and write-zeroes with and without NO_HOLE, FUA and
// flush, read-only snapshot exports; and qemu-img convert throughput, NBD against the FUSE file.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { runCli } from './helpers/cli'
import { snapshot } from './helpers/export'
import { randomBytes, rng, sha256 } from './helpers/model'
import { fuseUnavailable, makeTempDir, missingCli } from './helpers/cluster'
import { dataRanges, exec, qemuImgMap, qemuIo, qemuUnavailable, startNbdCluster, waitFor, waitForSocket } from './helpers/nbd'

const KiB = 1024
const MiB = 1024 * KiB
const SIZE = 64 * MiB
const BLOCK = 1 * MiB

const skip = missingCli('mount') ?? fuseUnavailable() ?? qemuUnavailable()

t.test('NBD export through QEMU tools', { skip: skip ?? false }, async (t) => {
  const c = await startNbdCluster(t)
  const zk = c.zk.connectString
  const created = await runCli(['disk', 'create', 'vm', '--size', '64M', '--block-size', '1M', '--replicas', '2', '--nodes', 'a1,a2'], { zk })
  t.equal(created.code, 0, created.stderr)
  const sock = c.socket('vm')
  const fuseFile = path.join(c.agent.mountPoint, 'vm')
  const tmp = makeTempDir(t, 'nbd-qemu')
  const model = Buffer.alloc(SIZE)
  const written = new Set<number>() // disk blocks that hold a version

  const touch = (off: number, len: number): void => { for (let b = Math.floor(off / BLOCK); b <= Math.floor((off + len - 1) / BLOCK); b++) written.add(b) }
  const nbdImage = async (uri: string): Promise<Buffer> => {
    const out = path.join(tmp, `image-${Date.now()}.raw`)
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out], { timeout: 120_000 })
    const data = await fs.promises.readFile(out)
    await fs.promises.rm(out)
    return data
  }
  const expectedRanges = (): Array<[number, number]> => {
    const out: Array<[number, number]> = []
    for (const b of [...written].sort((x, y) => x - y)) {
      const last = out[out.length - 1]
      if (last !== undefined && last[1] === b * BLOCK) last[1] += BLOCK
      else out.push([b * BLOCK, (b + 1) * BLOCK])
    }
    return out
  }

  t.test('a socket appears for the disk, with the disk file\'s permissions', async (t) => {
    await waitForSocket(sock)
    t.equal(fs.statSync(sock).mode & 0o777, 0o660, 'rw for owner and group, like the disk file (0660)')
    await fs.promises.chmod(fuseFile, 0o640)
    await waitFor('the socket mode to follow chmod', () => (fs.statSync(sock).mode & 0o777) === 0o600)
    t.pass('chmod 0640 on the disk file: the socket is 0600 (the group may only read the file, and a connection can write)')
    await fs.promises.chmod(fuseFile, 0o660)
    await waitFor('the socket mode to follow chmod back', () => (fs.statSync(sock).mode & 0o777) === 0o660)
  })

  t.test('list and info over the socket and TCP', async (t) => {
    const list = await exec('qemu-nbd', ['--list', '-k', sock])
    t.match(list.stdout, /export: 'vm'\n/, 'qemu-nbd --list on the socket names the disk')
    t.match(list.stdout, /min block: 1/, 'and the block-size constraints')
    t.match(list.stdout, /flags: .*\bmulti\b/, 'and can-multi-conn')
    const tcpList = await exec('qemu-nbd', ['--list', '-b', '127.0.0.1', '-p', String(c.port)])
    t.match(tcpList.stdout, /export: 'vm'\n/, 'qemu-nbd --list over TCP names the disk')
    for (const uri of [c.uri('vm'), c.tcpUri('vm'), `nbd+unix://?socket=${sock}`]) {
      const info = JSON.parse((await exec('qemu-img', ['info', '--output=json', '-f', 'raw', uri])).stdout) as { 'virtual-size': number }
      t.equal(info['virtual-size'], SIZE, `qemu-img info ${uri}: 64 MiB`)
    }
    await t.rejects(exec('qemu-img', ['info', '-f', 'raw', c.uri('nosuch').replace('nosuch.sock', 'vm.sock')]), 'an unknown export on the disk\'s socket is refused')
  })

  t.test('writes and reads through qemu-io match the model and the FUSE file', async (t) => {
    const rand = rng(13)
    const cmds: string[] = []
    for (let i = 0; i < 24; i++) {
      const len = i % 4 === 3 ? 1 + Math.floor(rand() * 70_000) : (1 + Math.floor(rand() * 6 * 128)) * 4 * KiB // some unaligned
      const off = Math.floor(rand() * (40 * MiB - len))
      const pattern = 1 + Math.floor(rand() * 254)
      cmds.push(`write -P ${pattern} ${off} ${len}`)
      model.fill(pattern, off, off + len)
      touch(off, len)
    }
    await qemuIo(c.uri('vm'), cmds)
    const verify = cmds.slice(-4).map(w => w.replace('write', 'read'))
    await qemuIo(c.uri('vm'), verify, { readOnly: true })
    t.pass('qemu-io read -P verifies the last writes')
    t.equal(sha256(await nbdImage(c.uri('vm'))), sha256(model), 'the whole disk read over NBD equals the model')
    t.equal(sha256(await fs.promises.readFile(fuseFile)), sha256(model), 'and read through the FUSE file')

    // The other way round: written through the FUSE file, read over NBD (TCP).
    const data = randomBytes(rand, 3 * MiB + 123)
    const fh = await fs.promises.open(fuseFile, 'r+')
    try { await fh.write(data, 0, data.length, 20 * MiB + 77) } finally { await fh.close() }
    data.copy(model, 20 * MiB + 77)
    touch(20 * MiB + 77, data.length)
    t.equal(sha256(await nbdImage(c.tcpUri('vm'))), sha256(model), 'a write through the FUSE file is read over NBD')
  })

  t.test('qemu-img map shows the holes (per 1 MiB disk block)', async (t) => {
    const map = await qemuImgMap(c.uri('vm'))
    t.same(dataRanges(map), expectedRanges(), 'data exactly where blocks were written')
    t.ok(map.filter(e => !e.data).every(e => e.zero), 'holes read as zero')
    t.comment(`${map.length} map entries, ${written.size} of ${SIZE / BLOCK} blocks written`)
    const fuseMap = await qemuImgMap(fuseFile)
    t.same(dataRanges(fuseMap), expectedRanges(), 'the FUSE file of the same disk shows the same holes (SEEK_DATA/SEEK_HOLE)')
  })

  t.test('discard and write-zeroes', async (t) => {
    await qemuIo(c.uri('vm'), ['write -P 7 44M 8M', 'write -P 9 60M 1M'])
    model.fill(7, 44 * MiB, 52 * MiB); model.fill(9, 60 * MiB, 61 * MiB)
    touch(44 * MiB, 8 * MiB); touch(60 * MiB, MiB)
    await qemuIo(c.uri('vm'), ['discard 44M 2M'])
    model.fill(0, 44 * MiB, 46 * MiB); written.delete(44); written.delete(45)
    await qemuIo(c.uri('vm'), ['write -z -u 46M 2M'])  // may punch: a hole
    model.fill(0, 46 * MiB, 48 * MiB); written.delete(46); written.delete(47)
    await qemuIo(c.uri('vm'), ['write -z 48M 1M'])     // NO_HOLE: zeros written, stays allocated
    model.fill(0, 48 * MiB, 49 * MiB)
    await qemuIo(c.uri('vm'), ['write -z 56M 1M'])     // NO_HOLE on an unwritten block allocates it
    touch(56 * MiB, MiB)
    await qemuIo(c.uri('vm'), ['write -z -u 60M 100k']) // part of a block: zeros, block stays data
    model.fill(0, 60 * MiB, 60 * MiB + 100 * KiB)
    t.equal(sha256(await nbdImage(c.uri('vm'))), sha256(model), 'the disk equals the model')
    t.equal(sha256(await fs.promises.readFile(fuseFile)), sha256(model), 'also through the FUSE file')
    t.same(dataRanges(await qemuImgMap(c.uri('vm'))), expectedRanges(), 'discarded blocks are holes, NO_HOLE zeroes are data')
  })

  t.test('FUA writes and flush succeed', async (t) => {
    const out = await qemuIo(c.uri('vm'), ['write -f -P 33 0 64k', 'flush', 'read -P 33 0 64k'])
    t.match(out, /wrote 65536\/65536/, 'FUA write acknowledged')
    model.fill(33, 0, 64 * KiB); touch(0, 64 * KiB)
  })

  t.test('a snapshot exports read-only', async (t) => {
    await snapshot(zk, 'vm@s1')
    const atSnapshot = Buffer.from(model)
    const writtenAtSnapshot = new Set(written)
    await waitFor('vm@s1 in the export list', async () => /export: 'vm@s1'\n/.test((await exec('qemu-nbd', ['--list', '-k', sock])).stdout))
    const info = JSON.parse((await exec('qemu-img', ['info', '--output=json', '-f', 'raw', c.uri('vm@s1')])).stdout) as { 'virtual-size': number }
    t.equal(info['virtual-size'], SIZE, 'qemu-img info of vm@s1')
    const list = await exec('qemu-nbd', ['--list', '-k', sock])
    t.match(list.stdout, /export: 'vm@s1'\n.*\n\s*flags: .*\breadonly\b/, 'listed as read-only')
    await qemuIo(c.uri('vm'), ['write -P 99 1M 2M'])
    model.fill(99, MiB, 3 * MiB)
    t.equal(sha256(await nbdImage(c.uri('vm@s1'))), sha256(atSnapshot), 'the snapshot export holds the bytes of the snapshot')
    t.equal(sha256(await nbdImage(c.tcpUri('vm@s1'))), sha256(atSnapshot), 'also over TCP')
    await t.rejects(qemuIo(c.uri('vm@s1'), ['write -P 1 0 4k']), 'qemu-io cannot write it')
    const saved = new Set(written)
    written.clear(); for (const b of writtenAtSnapshot) written.add(b)
    t.same(dataRanges(await qemuImgMap(c.uri('vm@s1'))), expectedRanges(), 'qemu-img map of the snapshot shows its holes')
    written.clear(); for (const b of saved) written.add(b)
  })

  t.test('qemu-img convert throughput: NBD and the FUSE file, same run', async (t) => {
    for (const name of ['bench-nbd', 'bench-fuse']) {
      const r = await runCli(['disk', 'create', name, '--size', '64M', '--replicas', '2', '--nodes', 'a1,a2'], { zk })
      t.equal(r.code, 0, r.stderr)
    }
    await waitForSocket(c.socket('bench-nbd'))
    const src = path.join(tmp, 'src.raw')
    await fs.promises.writeFile(src, randomBytes(rng(5), SIZE))
    const timed = async (args: string[]): Promise<number> => {
      const t0 = process.hrtime.bigint()
      await exec('qemu-img', args, { timeout: 120_000 })
      return Number(process.hrtime.bigint() - t0) / 1e9
    }
    const mibs = (s: number): string => `${(SIZE / MiB / s).toFixed(0)} MiB/s`
    const wNbd = await timed(['convert', '-n', '-f', 'raw', '-O', 'raw', src, c.uri('bench-nbd')])
    const wFuse = await timed(['convert', '-n', '-f', 'raw', '-O', 'raw', '-t', 'none', src, path.join(c.agent.mountPoint, 'bench-fuse')])
    const rNbd = await timed(['convert', '-f', 'raw', '-O', 'raw', c.uri('bench-nbd'), path.join(tmp, 'out-nbd.raw')])
    const rFuse = await timed(['convert', '-f', 'raw', '-O', 'raw', '-T', 'none', path.join(c.agent.mountPoint, 'bench-fuse'), path.join(tmp, 'out-fuse.raw')])
    t.comment(`qemu-img convert 64 MiB into the disk: NBD ${mibs(wNbd)}, FUSE file ${mibs(wFuse)}; out of it: NBD ${mibs(rNbd)}, FUSE file ${mibs(rFuse)}`)
    const want = sha256(await fs.promises.readFile(src))
    t.equal(sha256(await fs.promises.readFile(path.join(tmp, 'out-nbd.raw'))), want, 'NBD copy intact')
    t.equal(sha256(await fs.promises.readFile(path.join(tmp, 'out-fuse.raw'))), want, 'FUSE copy intact')
  })

  t.test('the socket goes with the disk', async (t) => {
    const r = await runCli(['disk', 'delete', 'bench-fuse'], { zk })
    t.equal(r.code, 0, r.stderr)
    await waitForSocket(c.socket('bench-fuse'), false)
    t.pass('bench-fuse.sock removed after the disk was deleted')
  })
})
