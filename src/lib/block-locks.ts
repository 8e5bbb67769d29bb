// Per-block locks between writes (shared) and a relocation copy of that block (exclusive):
// a copy starts once the writes in flight on the block are done, and writes that arrive during
// the copy wait for it. That is what keeps a write racing a copy from being lost: the target
// gets the source's bytes as of a moment with no write in flight, plus every write after it.
// What a relocation copy takes (the executor needs no more of the locks).
export interface CopyLocks {
  withCopy: <T>(block: number, fn: () => Promise<T>) => Promise<T>
}

export class BlockLocks implements CopyLocks {
  private readonly writers = new Map<number, number>()
  private readonly drained = new Map<number, Array<() => void>>()
  private readonly copying = new Map<number, Promise<void>>()

  async acquireWrite (block: number): Promise<void> {
    for (let c = this.copying.get(block); c !== undefined; c = this.copying.get(block)) await c
    this.writers.set(block, (this.writers.get(block) ?? 0) + 1)
  }

  releaseWrite (block: number): void {
    const n = (this.writers.get(block) ?? 1) - 1
    if (n > 0) { this.writers.set(block, n); return }
    this.writers.delete(block)
    for (const wake of this.drained.get(block) ?? []) wake()
    this.drained.delete(block)
  }

  async withCopy<T> (block: number, fn: () => Promise<T>): Promise<T> {
    for (let c = this.copying.get(block); c !== undefined; c = this.copying.get(block)) await c
    let done!: () => void
    this.copying.set(block, new Promise<void>(resolve => { done = resolve }))
    try {
      while ((this.writers.get(block) ?? 0) > 0) {
        await new Promise<void>(resolve => {
          const list = this.drained.get(block) ?? []
          list.push(resolve)
          this.drained.set(block, list)
        })
      }
      return await fn()
    } finally {
      this.copying.delete(block)
      done()
    }
  }
}
