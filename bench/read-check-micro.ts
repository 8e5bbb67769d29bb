// In-process microbenchmark of a checked read, as the agent's short-circuit path and the node's
// read path do it, before and after native/pread-sums: "before" = pread (readSync ≤ 256 KiB, the
// pool above) then crc32c of the span on the event loop (page-checksums.ts firstBadPage, the
// s7-checksum code); "after" = readWithSums (pread + page sums in one native call, on the pool
// above 256 KiB) then a memcmp of the sums (pread-sums.ts). Sums are in memory (the cached case).
// A page-cached file; rounds alternate before/after; medians. Prints JSON.
//   node dist/bench/read-check-micro.js [rounds=5]
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { CHECKSUM_PAGE_BYTES, firstBadPage, pageSums } from '../src/storagenode/page-checksums'
import { firstDifferentPage, preadSumsAddon, readWithSums } from '../src/storagenode/pread-sums'
import { SYNC_IO_MAX_BYTES } from '../src/lib/limits'

const FILE_BYTES = 64 * 1024 * 1024

async function readBefore (fd: number, at: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length)
  let got = 0
  if (length <= SYNC_IO_MAX_BYTES) {
    while (got < length) { const n = fs.readSync(fd, buf, got, length - got, at + got); if (n === 0) break; got += n }
  } else {
    while (got < length) {
      const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, got, length - got, at + got, (err, b) => err !== null ? reject(err) : resolve(b)))
      if (n === 0) break
      got += n
    }
  }
  return buf
}

async function checkedBefore (fd: number, sums: Buffer, at: number, length: number): Promise<Buffer> {
  const buf = await readBefore(fd, at, length)
  const first = at / CHECKSUM_PAGE_BYTES
  if (firstBadPage(buf, sums.subarray(first * 4, first * 4 + length / 1024), first) >= 0) throw new Error('mismatch')
  return buf
}

async function checkedAfter (fd: number, sums: Buffer, at: number, length: number): Promise<Buffer> {
  const r = await readWithSums(fd, at, length)
  const first = at / CHECKSUM_PAGE_BYTES
  if (firstDifferentPage(r.sums, sums.subarray(first * 4, first * 4 + length / 1024), first) >= 0) throw new Error('mismatch')
  return r.data
}

function mainThreadTicks (): number {
  const f = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')
  const fields = f.slice(f.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])  // utime + stime, clock ticks (1/100 s)
}

async function job (fn: typeof checkedAfter, fd: number, sums: Buffer, size: number, random: boolean, qd: number, ms: number): Promise<Record<string, number>> {
  let pos = 0
  let reads = 0
  const pages = FILE_BYTES / size
  const next = (): number => { if (random) return Math.floor(Math.random() * pages) * size; pos = (pos + size) % FILE_BYTES; return pos }
  const cpu0 = process.cpuUsage(); const tick0 = mainThreadTicks(); const elu0 = performance.eventLoopUtilization(); const t0 = performance.now()
  const end = t0 + ms
  await Promise.all(Array.from({ length: qd }, async () => { while (performance.now() < end) { await fn(fd, sums, next(), size); reads++ } }))
  const wall = performance.now() - t0
  const cpu = process.cpuUsage(cpu0); const elu = performance.eventLoopUtilization(elu0); const ticks = mainThreadTicks() - tick0
  return {
    MBps: reads * size / wall / 1000,
    usPerRead: wall * 1000 / reads,
    cpuUsPerRead: (cpu.user + cpu.system) / reads,
    mainThreadCpuUsPerRead: ticks * 10000 / reads,
    loopActiveUsPerRead: elu.active * 1000 / reads
  }
}

function median (xs: number[]): number { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }

async function main (): Promise<void> {
  const rounds = Number(process.argv[2] ?? 5)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-readmicro-'))
  try {
    const data = randomBytes(FILE_BYTES)
    const file = path.join(dir, 'v')
    fs.writeFileSync(file, data)
    const sums = pageSums(data)
    const fd = fs.openSync(file, 'r')
    const jobs = [
      { name: 'seq 1MiB qd1', size: 1 << 20, random: false, qd: 1, ms: 1500 },
      { name: 'seq 1MiB qd4', size: 1 << 20, random: false, qd: 4, ms: 1500 },
      { name: 'rand 4KiB qd1', size: 4096, random: true, qd: 1, ms: 1500 }
    ]
    const out: Record<string, unknown> = { hardwareCrc: preadSumsAddon().hardware, loadavg: os.loadavg(), rounds }
    for (const j of jobs) {
      const res: Record<string, Array<Record<string, number>>> = { before: [], after: [] }
      for (let r = 0; r < rounds; r++) {
        for (const [name, fn] of [['before', checkedBefore], ['after', checkedAfter]] as const) res[name].push(await job(fn, fd, sums, j.size, j.random, j.qd, j.ms))
      }
      const med = (side: string): Record<string, number> => Object.fromEntries(Object.keys(res[side][0]).map(k => [k, Number(median(res[side].map(x => x[k])).toFixed(2))]))
      const b = med('before'); const a = med('after')
      out[j.name] = { before: b, after: a, throughputAfterOverBefore: Number((a.MBps / b.MBps).toFixed(2)), mainThreadCpuAfterOverBefore: Number((a.mainThreadCpuUsPerRead / b.mainThreadCpuUsPerRead).toFixed(2)), loopActiveAfterOverBefore: Number((a.loopActiveUsPerRead / b.loopActiveUsPerRead).toFixed(2)) }
    }
    fs.closeSync(fd)
    console.log(JSON.stringify(out, null, 1))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch(err => { console.error(err); process.exit(1) })
