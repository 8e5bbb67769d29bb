import type { BenchSettings } from './jobs'
import type { Cleanup } from './cleanup'
import type { TargetRun } from './report'
import type { Progress, TargetExtras } from './target-run'

export async function benchCeph (_dir: string, _settings: BenchSettings, _progress: Progress, _run: TargetRun, _cleanup: Cleanup, _extras: TargetExtras): Promise<void> {
  throw new Error('ceph: not implemented yet')
}
