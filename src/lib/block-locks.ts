// Per-block locks between writes (shared) and a relocation copy of that block (exclusive):
// a copy starts once the writes in flight on the block are done, and writes that arrive during
// the copy wait for it. That is what keeps a write racing a copy from being lost: the target
// gets the source's bytes as of a moment with no write in flight, plus every write after it.
// What a relocation copy takes (the executor needs no more of the locks).
export interface CopyLocks {
  withCopy: <T>(block: number, fn: () => Promise<T>) => Promise<T>
  withCopies: <T>(blocks: number[], fn: () => Promise<T>) => Promise<T>
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
    return await this.withCopies([block], fn)
  }

  // The copy lock of several blocks at once, taken one after the other in ascending order (two
  // callers never wait for each other in a cycle): a relocation marks a batch of blocks' targets
  // in sync under them, so no write is on its way to a target marked in sync meanwhile.
  async withCopies<T> (blocks: number[], fn: () => Promise<T>): Promise<T> {
    const held: Array<{ block: number, done: () => void }> = []
    try {
      for (const block of [...new Set(blocks)].sort((a, b) => a - b)) {
        for (let c = this.copying.get(block); c !== undefined; c = this.copying.get(block)) await c
        let done!: () => void
        this.copying.set(block, new Promise<void>(resolve => { done = resolve }))
        held.push({ block, done })
        while ((this.writers.get(block) ?? 0) > 0) {
          await new Promise<void>(resolve => {
            const list = this.drained.get(block) ?? []
            list.push(resolve)
            this.drained.set(block, list)
          })
        }
      }
      return await fn()
    } finally {
      for (const { block, done } of held) {
        this.copying.delete(block)
        done()
      }
    }
  }
}
