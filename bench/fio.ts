// Running one fio job and reading its JSON report (fio --output-format=json).
import { spawn } from 'node:child_process'

export type FioPattern = 'write' | 'read' | 'randread' | 'randwrite'

// How fio reaches a target that is not a file: a block device over NBD (fio's nbd engine, libnbd)
// or a Ceph RBD image (fio's rbd engine, librbd). Both are asynchronous engines; at iodepth 1 they
// keep one request in flight per job, as psync does, so the jobs compare like for like.
export type FioEngine =
  | { kind: 'nbd', uri: string }                 // nbd+unix:///EXPORT?socket=PATH
  | { kind: 'rbd', pool: string, image: string, clientName: string, env: Record<string, string> } // env: CEPH_CONF

export interface FioJob {
  name: string               // e.g. 'seq-write-1m'
  pattern: FioPattern
  blockSizeBytes: number
  filename: string           // the file under test (one file shared by all jobs); with an engine, a label
  engine?: FioEngine         // default: psync, O_DIRECT on `filename`
  fileSizeBytes: number      // size of the region the jobs cover
  numJobs: number
  ioDepth?: number           // psync is synchronous; default 1
  // Sequential jobs: each of the numJobs workers gets its own slice of the file (offset_increment)
  // so the four streams stay sequential instead of racing over the same offsets.
  splitFileAmongJobs: boolean
  runtimeSec?: number        // time_based when given; otherwise the job ends after one pass
  rampSec?: number
  timeoutMs: number          // kill fio if it has not finished by then (a hung FUSE daemon)
}

export interface FioDirectionResult {
  bytesPerSec: number
  iops: number
  ios: number
  meanLatencyUsec: number
  p99LatencyUsec: number
}

export interface FioResult {
  job: string
  pattern: FioPattern
  blockSizeBytes: number
  runtimeMs: number
  wallMs: number
  read: FioDirectionResult
  write: FioDirectionResult
  // the direction the pattern exercises (read for read/randread, write for the others)
  main: FioDirectionResult
  args: string[]
}

export function fioArgs (job: FioJob): string[] {
  const perJobBytes = job.splitFileAmongJobs ? Math.floor(job.fileSizeBytes / job.numJobs) : job.fileSizeBytes
  const args = [
    `--name=${job.name}`,
    ...engineArgs(job),
    `--rw=${job.pattern}`,
    `--bs=${job.blockSizeBytes}`,
    `--numjobs=${job.numJobs}`,
    `--iodepth=${job.ioDepth ?? 1}`,
    `--size=${perJobBytes}`,
    '--group_reporting',
    '--fallocate=none',          // FUSE file systems here do not implement fallocate
    '--randrepeat=0',
    '--norandommap',
    '--output-format=json'
  ]
  if (job.splitFileAmongJobs) args.push(`--offset_increment=${perJobBytes}`)
  if (job.runtimeSec !== undefined) args.push('--time_based', `--runtime=${job.runtimeSec}`)
  if (job.rampSec !== undefined) args.push(`--ramp_time=${job.rampSec}`)
  return args
}

function engineArgs (job: FioJob): string[] {
  const e = job.engine
  if (e === undefined) return [`--filename=${job.filename}`, '--ioengine=psync', '--direct=1']
  if (e.kind === 'nbd') return ['--ioengine=nbd', `--uri=${e.uri}`]
  return ['--ioengine=rbd', `--clientname=${e.clientName}`, `--pool=${e.pool}`, `--rbdname=${e.image}`]
}

interface FioJsonDirection {
  bw_bytes: number
  iops: number
  total_ios: number
  lat_ns?: { mean: number }
  clat_ns?: { percentile?: Record<string, number> }
}

interface FioJson {
  jobs: Array<{ jobname: string, error: number, job_runtime: number, read: FioJsonDirection, write: FioJsonDirection }>
}

function direction (d: FioJsonDirection): FioDirectionResult {
  return {
    bytesPerSec: d.bw_bytes,
    iops: d.iops,
    ios: d.total_ios,
    meanLatencyUsec: (d.lat_ns?.mean ?? 0) / 1000,
    p99LatencyUsec: (d.clat_ns?.percentile?.['99.000000'] ?? 0) / 1000
  }
}

// fio sometimes prints notes ("fio: ...") before the JSON document: parse from the first '{'.
export function parseFioJson (stdout: string): FioJson {
  const start = stdout.indexOf('{')
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 300)}`)
  return JSON.parse(stdout.slice(start)) as FioJson
}

export async function runFio (job: FioJob): Promise<FioResult> {
  const args = fioArgs(job)
  const startedMs = Date.now()
  const { stdout, stderr, code, timedOut } = await new Promise<{ stdout: string, stderr: string, code: number | null, timedOut: boolean }>((resolve, reject) => {
    const env = job.engine?.kind === 'rbd' ? { ...process.env, ...job.engine.env } : process.env
    const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    let err = ''
    let timedOut = false
    child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
    child.stderr.on('data', (d: Buffer) => { err += d.toString('utf8') })
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, job.timeoutMs)
    child.on('error', (e) => { clearTimeout(timer); reject(e) })
    child.on('close', (c) => { clearTimeout(timer); resolve({ stdout: out, stderr: err, code: c, timedOut }) })
  })
  if (timedOut) throw new Error(`fio ${job.name} on ${job.filename} did not finish within ${job.timeoutMs} ms`)
  if (code !== 0) throw new Error(`fio ${job.name} on ${job.filename} exited with ${code}: ${stderr.trim() || stdout.slice(0, 500)}`)
  const report = parseFioJson(stdout)
  const j = report.jobs[0]
  if (j === undefined) throw new Error(`fio ${job.name}: no job in the JSON report`)
  if (j.error !== 0) throw new Error(`fio ${job.name}: job error ${j.error}: ${stderr.trim()}`)
  const read = direction(j.read)
  const write = direction(j.write)
  const isRead = job.pattern === 'read' || job.pattern === 'randread'
  return {
    job: job.name,
    pattern: job.pattern,
    blockSizeBytes: job.blockSizeBytes,
    runtimeMs: j.job_runtime,
    wallMs: Date.now() - startedMs,
    read,
    write,
    main: isRead ? read : write,
    args
  }
}
