// How long a relocation's copy will take, measured instead of guessed: a sample of the disk's
// written blocks is pulled node to node the way the executor pulls (targets pull from sources,
// the same number of blocks in flight, every target of a block at once, spread over the paths
// alike), but with the probe flag set, so the targets read the blocks over the real link and
// store nothing.
import { COPY_CONCURRENCY_DEFAULT } from './executor'
import { StorageClient } from '../storagenode/client'
import { forEachBounded } from '../lib/worker-pool'
import { PullPaths } from './pull-paths'

export const PROBE_BUDGET_MS_DEFAULT = 3000
const PROBE_SAMPLE_BLOCKS = 16

export interface CopyEstimate {
  seconds: number | null            // null: nothing could be measured (no written block, probes failed)
  measuredBytesPerSec: number       // node to node, all targets together; 0 when not measured
  rateCapBytesPerSec: number        // --rate, 0 when none
  sampledBlocks: number
  basis: 'nothing to copy' | 'measured' | 'rate cap' | 'measured, rate cap' | 'not measured'
}

export interface ProbeNode { id: string, address: string }
export interface ProbeBlock { block: number, sources: ProbeNode[] }  // sources: nodes holding it

export interface ProbeInput {
  diskUuid: string
  blocks: ProbeBlock[]         // written blocks with their holders (the estimate samples them)
  targets: ProbeNode[]         // targets still to fill
  bytesToCopy: number          // the plan's upper bound
  rateCapBytesPerSec: number
  budgetMs?: number           // 0: do not measure
  concurrency?: number
}

// Evenly spread over the disk, so a sample is not just its first blocks.
function sample<T> (items: T[], n: number): T[] {
  if (items.length <= n) return items
  return Array.from({ length: n }, (_, i) => items[Math.floor((i * items.length) / n)])
}

export async function estimateCopy (input: ProbeInput): Promise<CopyEstimate> {
  const cap = input.rateCapBytesPerSec
  const capped = (bytesPerSec: number): CopyEstimate => {
    const rate = cap > 0 && (bytesPerSec === 0 || cap < bytesPerSec) ? cap : bytesPerSec
    const basis = bytesPerSec > 0 ? (rate === cap ? 'measured, rate cap' : 'measured') : (cap > 0 ? 'rate cap' : 'not measured')
    return { seconds: rate > 0 ? input.bytesToCopy / rate : null, measuredBytesPerSec: bytesPerSec, rateCapBytesPerSec: cap, sampledBlocks: 0, basis }
  }
  if (input.bytesToCopy === 0 || input.blocks.length === 0 || input.targets.length === 0) {
    return { seconds: 0, measuredBytesPerSec: 0, rateCapBytesPerSec: cap, sampledBlocks: 0, basis: 'nothing to copy' }
  }
  const budgetMs = input.budgetMs ?? PROBE_BUDGET_MS_DEFAULT
  if (budgetMs <= 0) return capped(0)
  const queue = sample(input.blocks, PROBE_SAMPLE_BLOCKS)
  const clients = new Map(input.targets.map(t => [t.id, new StorageClient({ nodeId: t.id, address: t.address })]))
  // Each target starts on the least busy path, as the executor's pulls do (pull-paths.ts).
  const paths = new PullPaths()
  const started = Date.now()
  let bytes = 0
  let blocks = 0
  const probeOne = async (b: (typeof queue)[number]): Promise<void> => {
    // A block started before the budget ran out is finished: half a block would undercount.
    if (Date.now() - started >= budgetMs) return
    const orders = paths.orders(input.targets.map(t => t.id), b.sources, s => s.id)
    const got = await Promise.all(input.targets.map(async (target, i) => {
      const source = orders[i][0]
      if (source === undefined) return 0
      const client = clients.get(target.id) as StorageClient
      return await paths.pull(source.id, target.id, async () =>
        await client.pullBlock({ diskUuid: input.diskUuid, block: b.block, sourceNode: source.id, sourceAddress: source.address, leaseEpoch: 0, probe: true }, budgetMs * 4))
    }))
    bytes += got.reduce((a, n) => a + n, 0)
    blocks++
  }
  try {
    await forEachBounded(queue, input.concurrency ?? COPY_CONCURRENCY_DEFAULT, probeOne)
  } catch {
    // An unreachable node: no measurement (the relocation itself will report the node).
    return capped(0)
  } finally {
    await Promise.all([...clients.values()].map(async c => { await c.close() }))
  }
  const elapsedSec = Math.max(0.001, (Date.now() - started) / 1000)
  return { ...capped(bytes / elapsedSec), sampledBlocks: blocks }
}

export function formatDuration (seconds: number): string {
  const s = Math.ceil(seconds)
  if (s < 60) return `${s} s`
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
}
