// Bounded concurrency, one module for the whole tree: every "at most N in flight" of src/ is one
// of these three shapes.
//   forEachBounded  a known list of items (discard pieces, blocks to copy or flatten)
//   orderedPrefetch results handed out in item order while later ones are fetched (export reads)
//   Window          operations pushed one by one as they arrive (import writes)
// Callers that move block data bound memory with a byte budget on top (a block may be 64 MiB).

// Runs fn(item) for every item, in order, with at most `limit` calls in flight. The first failure
// stops it: no further item starts, the calls in flight are waited for (no work outlives the
// call: a caller may release a lease or a write count right after), then that failure is thrown.
export async function forEachBounded<T> (items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  let failed = false
  let failure: unknown
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++])
      } catch (err) {
        if (!failed) { failed = true; failure = err }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failed) throw failure
}

// Yields fn(item) for each item in order, with up to `ahead` calls running.
export async function * orderedPrefetch<T, R> (items: readonly T[], ahead: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const running: Array<Promise<R>> = []
  let next = 0
  const fill = (): void => {
    while (running.length < ahead && next < items.length) {
      const p = fn(items[next++])
      p.catch(() => {}) // observed when its turn comes; never an unhandled rejection meanwhile
      running.push(p)
    }
  }
  fill()
  while (running.length > 0) {
    const r = await (running.shift() as Promise<R>)
    fill()
    yield r
  }
}

// Keeps up to `limit` operations in flight; the first failure is rethrown by the next add/drain.
export class Window {
  private readonly inFlight = new Set<Promise<void>>()
  private failure: unknown = null

  constructor (private readonly limit: number) {}

  async add (op: () => Promise<void>): Promise<void> {
    if (this.failure !== null) throw this.failure
    while (this.inFlight.size >= this.limit) await Promise.race(this.inFlight)
    if (this.failure !== null) throw this.failure
    const p: Promise<void> = op().catch((err) => { if (this.failure === null) this.failure = err }).finally(() => this.inFlight.delete(p))
    this.inFlight.add(p)
  }

  async drain (): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight)
    if (this.failure !== null) throw this.failure
  }
}
