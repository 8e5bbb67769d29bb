// Bounded concurrency for export and import: reads fetched ahead but handed out in order, and
// writes kept in flight up to a limit. Both bound memory by a byte budget, never by item count
// alone (a block may be 64 MiB).

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
