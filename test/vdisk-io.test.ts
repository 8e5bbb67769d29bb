// Reads and writes through a real FUSE mount, checked byte for byte against a model; fio with
// crc32c verification; a qemu-img round trip; and a second agent on another site reading it all.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { startCluster } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { randomBytes, rng, sha256 } from './helpers/model'

const exec = promisify(execFile)
const KiB = 1024
const MiB = 1024 * KiB

t.test('FUSE disk I/O against a model', async (t) => {
  const c = await startCluster(t, { sites: 2, nodesPerSite: 2 })
  const zk = c.zk.connectString
  const a = c.agent('site-a')
  const b = c.agent('site-b')

  t.test('random unaligned writes and reads across 64 KiB blocks match the model', async (t) => {
    const sizeBytes = 8 * MiB
    const res = await runCli(['disk', 'create', 'model', '--size', '8M', '--block-size', '64K', '--site', 'site-a'], { zk })
    t.equal(res.code, 0, res.stderr)
    const model = Buffer.alloc(sizeBytes)
    const seed = Date.now() >>> 0
    t.comment(`seed ${seed}`)
    const rand = rng(seed)
    const fh = await fs.promises.open(path.join(a.mountPoint, 'model'), 'r+')
    try {
      // Sparse: before any write every byte reads as zero.
      const first = Buffer.alloc(300 * KiB)
      await fh.read(first, 0, first.length, 3 * MiB + 17)
      t.ok(first.every(x => x === 0), 'unwritten range reads as zeros')
      let mismatches = 0
      for (let i = 0; i < 300; i++) {
        const len = 1 + Math.floor(rand() * 200 * KiB)
        const off = Math.floor(rand() * (sizeBytes - len))
        if (rand() < 0.6) {
          const data = randomBytes(rand, len)
          const { bytesWritten } = await fh.write(data, 0, len, off)
          if (bytesWritten !== len) mismatches++
          data.copy(model, off)
        } else {
          const got = Buffer.alloc(len)
          const { bytesRead } = await fh.read(got, 0, len, off)
          if (bytesRead !== len || !got.equals(model.subarray(off, off + len))) mismatches++
        }
      }
      t.equal(mismatches, 0, 'every write and read agreed with the model')
      await fh.sync()
    } finally {
      await fh.close()
    }
    const whole = await fs.promises.readFile(path.join(a.mountPoint, 'model'))
    t.equal(sha256(whole), sha256(model), 'the whole disk equals the model on site A')
    const fromB = await fs.promises.readFile(path.join(b.mountPoint, 'model'))
    t.equal(sha256(fromB), sha256(model), 'an agent on site B sees the same bytes')
  })

  t.test('fio writes and verifies crc32c through the mount', async (t) => {
    const res = await runCli(['disk', 'create', 'fio', '--size', '64M', '--block-size', '1M', '--site', 'site-a'], { zk })
    t.equal(res.code, 0, res.stderr)
    const { stdout } = await exec('fio', ['--name=verify', `--filename=${path.join(a.mountPoint, 'fio')}`, '--rw=randwrite', '--bs=4k,64k',
      '--bsrange=4k-192k', '--size=64M', '--io_size=24M', '--ioengine=psync', '--direct=1', '--verify=crc32c', '--verify_fatal=1',
      '--do_verify=1', '--verify_state_save=0', '--numjobs=1', '--output-format=json'], { maxBuffer: 16 * MiB })
    const job = JSON.parse(stdout).jobs[0]
    t.equal(job.error, 0, 'fio reported no error (verify_fatal would have failed it)')
    t.ok(job.write.io_bytes >= 24 * MiB, `fio wrote ${job.write.io_bytes} bytes`)
    t.ok(job.read.io_bytes >= 24 * MiB, `fio read back and verified ${job.read.io_bytes} bytes`)
  })

  t.test('qemu-img convert into the mount and back is lossless', async (t) => {
    const dir = fs.mkdtempSync(path.join(path.dirname(a.mountPoint), 'qemu-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    const src = path.join(dir, 'src.raw')
    const rand = rng(42)
    const fd = fs.openSync(src, 'w')
    fs.ftruncateSync(fd, 24 * MiB)
    for (const off of [0, 5 * MiB + 4097, 17 * MiB]) fs.writeSync(fd, randomBytes(rand, 1 * MiB + 333), 0, 1 * MiB + 333, off)
    fs.closeSync(fd)
    const onMount = path.join(a.mountPoint, 'img')
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', src, onMount])
    t.equal(fs.statSync(onMount).size, 24 * MiB, 'the disk has the image size')
    await exec('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, onMount])
    t.pass('qemu-img compare: images are identical')
    const back = path.join(dir, 'back.raw')
    await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', path.join(b.mountPoint, 'img'), back])
    t.equal(sha256(fs.readFileSync(back)), sha256(fs.readFileSync(src)), 'converted back out (via site B) equals the source')
  })

  t.test('a write past the end fails with EFBIG and changes nothing', async (t) => {
    const file = path.join(a.mountPoint, 'model')
    const before = sha256(await fs.promises.readFile(file))
    const fh = await fs.promises.open(file, 'r+')
    try {
      await t.rejects(fh.write(Buffer.alloc(4096, 1), 0, 4096, 8 * MiB - 100), { code: 'EFBIG' })
    } finally {
      await fh.close()
    }
    t.equal(fs.statSync(file).size, 8 * MiB, 'size unchanged')
    t.equal(sha256(await fs.promises.readFile(file)), before, 'contents unchanged')
  })

  t.test('truncate grows a disk; shrinking is refused; rm deletes a closed disk', async (t) => {
    const file = path.join(a.mountPoint, 'grow')
    await exec('qemu-img', ['create', '-f', 'raw', file, '1M'])
    await exec('qemu-img', ['resize', '-f', 'raw', file, '3M'])
    t.equal(fs.statSync(file).size, 3 * MiB)
    t.equal(fs.statSync(path.join(b.mountPoint, 'grow')).size, 3 * MiB, 'the other agent sees the new size')
    fs.writeFileSync(file, Buffer.alloc(1000, 7), { flag: 'r+' })
    t.throws(() => fs.truncateSync(file, 1 * MiB), { code: 'EINVAL' }, 'shrinking would drop data')
    t.equal(fs.statSync(file).size, 3 * MiB)
    fs.unlinkSync(file)
    t.notOk(fs.existsSync(file), 'gone from site A')
    const list = await runCli(['disk', 'list', '--json'], { zk })
    t.notOk(JSON.parse(list.stdout).some((d: { name: string }) => d.name === 'grow'), 'gone from the cluster')
  })
})
