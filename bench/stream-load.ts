// The load the storage-node benchmarks put on one client: `inFlight` workers each keep one request
// outstanding until the deadline, sequential I/Os of `ioBytes` over a 64 MiB working set (16 blocks
// of 4 MiB: fits the page cache, so it measures the stack, not the disk).
export const BENCH_BLOCK_BYTES = 4 * 1024 * 1024
export const BENCH_BLOCKS = 16
export const BENCH_UUID = 'bench-0000-disk'

export interface LoadClient {
  read: (a: { diskUuid: string, block: number, epoch: number, offset: number, length: number }) => Promise<unknown>
  write: (a: { diskUuid: string, block: number, epoch: number, offset: number, data: Buffer, leaseEpoch: number }) => Promise<unknown>
}

// Returns the operations done; onOp gets each one's latency in µs.
export async function streamLoad (client: LoadClient, op: 'read' | 'write', ioBytes: number, inFlight: number, durationMs: number, onOp?: (latencyUs: number) => void): Promise<number> {
  const slots = BENCH_BLOCK_BYTES / ioBytes
  const data = Buffer.alloc(ioBytes, 0x5a)
  let next = 0
  let ops = 0
  const deadline = Date.now() + durationMs
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const i = next++
      const block = Math.floor(i / slots) % BENCH_BLOCKS
      const offset = (i % slots) * ioBytes
      const t0 = process.hrtime.bigint()
      if (op === 'write') await client.write({ diskUuid: BENCH_UUID, block, epoch: 1, offset, data, leaseEpoch: 1 })
      else await client.read({ diskUuid: BENCH_UUID, block, epoch: 1, offset, length: ioBytes })
      ops++
      onOp?.(Number(process.hrtime.bigint() - t0) / 1000)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
  return ops
}
