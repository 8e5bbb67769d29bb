// The fio workloads every target runs, in order. The sequential write runs first so the reads
// that follow hit data that was really written (on UKAI: blocks that exist on the nodes).
import type { FioEngine, FioJob, FioPattern } from './fio'

const MIB = 1024 * 1024
const KIB = 1024

export interface BenchSettings {
  fileSizeBytes: number   // the test file on every target (the UKAI disk's size)
  numJobs: number
  runtimeSec: number
  rampSec: number
}

export interface WorkloadSpec {
  id: 'seqwrite' | 'seqread' | 'randread' | 'randwrite'
  label: string
  pattern: FioPattern
  blockSizeBytes: number
}

export const WORKLOADS: WorkloadSpec[] = [
  { id: 'seqwrite', label: 'seq write 1M', pattern: 'write', blockSizeBytes: MIB },
  { id: 'seqread', label: 'seq read 1M', pattern: 'read', blockSizeBytes: MIB },
  { id: 'randread', label: 'rand read 4K', pattern: 'randread', blockSizeBytes: 4 * KIB },
  { id: 'randwrite', label: 'rand write 4K', pattern: 'randwrite', blockSizeBytes: 4 * KIB }
]

const FIO_GRACE_MS = 90_000

// `engine`: how fio reaches a target that is not a file (bench/fio.ts); `filename` is then a label.
export function timedJob (w: WorkloadSpec, filename: string, s: BenchSettings, engine?: FioEngine): FioJob {
  return {
    name: w.id,
    pattern: w.pattern,
    blockSizeBytes: w.blockSizeBytes,
    filename,
    engine,
    fileSizeBytes: s.fileSizeBytes,
    numJobs: s.numJobs,
    splitFileAmongJobs: w.pattern === 'write' || w.pattern === 'read',
    runtimeSec: s.runtimeSec,
    rampSec: s.rampSec,
    timeoutMs: (s.runtimeSec + s.rampSec) * 1000 + FIO_GRACE_MS
  }
}

// One untimed sequential pass over the whole file, so every block exists before anything is
// measured (a 10 s timed write may not cover a 2 GiB file on a slow target).
export function fillJob (filename: string, s: BenchSettings, engine?: FioEngine): FioJob {
  return {
    name: 'fill',
    pattern: 'write',
    blockSizeBytes: MIB,
    filename,
    engine,
    fileSizeBytes: s.fileSizeBytes,
    numJobs: s.numJobs,
    splitFileAmongJobs: true,
    timeoutMs: 600_000
  }
}
