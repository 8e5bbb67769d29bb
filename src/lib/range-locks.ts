// Per-key byte-range serialization: an operation waits for every earlier operation on the same key
// whose range overlaps its own, so overlapping writes apply in arrival order while disjoint writes
// to the same block run concurrently. Registration is synchronous, so "arrival" is call order.
interface Held { start: number, end: number, done: Promise<void> }

export class RangeLocks {
  private readonly held = new Map<string, Held[]>()

  run<T> (key: string, start: number, end: number, fn: () => Promise<T>): Promise<T> {
    if (end <= start) end = start + 1  // an empty range still orders against its neighbours
    let list = this.held.get(key)
    if (list === undefined) { list = []; this.held.set(key, list) }
    const waits: Array<Promise<void>> = []
    for (const h of list) if (h.start < end && start < h.end) waits.push(h.done)
    let markDone!: () => void
    const me: Held = { start, end, done: new Promise<void>(resolve => { markDone = resolve }) }
    list.push(me)
    const ran = waits.length === 0 ? Promise.resolve().then(fn) : Promise.all(waits).then(fn)
    const cleanup = (): void => {
      const l = this.held.get(key)
      if (l !== undefined) {
        const i = l.indexOf(me)
        if (i >= 0) l.splice(i, 1)
        if (l.length === 0) this.held.delete(key)
      }
      markDone()
    }
    ran.then(cleanup, cleanup)
    return ran
  }

  get size (): number { return this.held.size }
}
