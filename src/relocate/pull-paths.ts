// Which source each target of a block pulls from: the copy spread over the node-to-node paths.
//
// Every target of a block pulls it at once, each over its own path (target ← source; one
// connection per path, `--peer-address` may route each through its own WAN link). The executor
// used to give target i source i of the block's source list, in the same order for every block:
// with 2 sources and 2 targets only 2 of the 4 paths ever carried a pull (bench/relocate.ts saw
// b1→a2 and b2→a1 at 60 % of their caps, the other two at 16 %; bench/copy-throughput.ts used 2
// of 4). Now each target starts on the source whose path to it has the fewest pulls in flight,
// among the sources nearest to the target (same host, then same site, then any); ties go to the
// source with the fewest pulls in flight overall (so a block's targets start on different
// sources), then to a turn that moves on with every block. The other sources follow in the
// caller's order: a failed pull still falls back to them. The plan's probe (copy-estimate.ts)
// spreads its pulls the same way, so its estimate measures the paths the copy will use.

export interface NodePlace { host: string, site: string }

// 0 on the same host, 1 in the same site, 2 across sites (or unknown): lower is nearer.
export function pathCost (source: NodePlace | undefined, target: NodePlace | undefined): number {
  if (source === undefined || target === undefined) return 2
  return source.host === target.host ? 0 : source.site === target.site ? 1 : 2
}

const pathKey = (source: string, target: string): string => `${source}→${target}`

const bump = (m: Map<string, number>, key: string, by: number): void => { m.set(key, (m.get(key) ?? 0) + by) }

// Whether rank a comes before rank b (compared element by element).
function before (a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i]
  return false
}

export class PullPaths {
  private readonly perPath = new Map<string, number>()   // pulls in flight, by path
  private readonly perSource = new Map<string, number>() // pulls in flight, by source
  private turn = 0

  // `cost(source, target)`: how far the source is from the target (pathCost); none: all alike.
  constructor (private readonly cost: (source: string, target: string) => number = () => 0) {}

  // For each target (same order), the sources to try, first choice first. A target is never its
  // own source. `id` names a source's node.
  orders<S> (targets: readonly string[], sources: readonly S[], id: (s: S) => string): S[][] {
    const turn = this.turn++
    // This block's choices count as in flight for the targets after them.
    const planned = new Map<string, number>()
    const plannedFrom = new Map<string, number>()
    const load = (m: Map<string, number>, p: Map<string, number>, k: string): number => (m.get(k) ?? 0) + (p.get(k) ?? 0)
    return targets.map((target) => {
      const own = sources.filter(s => id(s) !== target)
      if (own.length === 0) return own
      const nearest = Math.min(...own.map(s => this.cost(id(s), target)))
      // Lowest first: pulls on the path, pulls from the source, the source's place after the turn.
      const rank = (s: S, i: number): number[] => [load(this.perPath, planned, pathKey(id(s), target)), load(this.perSource, plannedFrom, id(s)), (i - turn % own.length + own.length) % own.length]
      let best = -1
      let bestRank: number[] = []
      own.forEach((s, i) => {
        if (this.cost(id(s), target) !== nearest) return
        const r = rank(s, i)
        if (best < 0 || before(r, bestRank)) { best = i; bestRank = r }
      })
      const first = own[best]
      bump(planned, pathKey(id(first), target), 1)
      bump(plannedFrom, id(first), 1)
      return [first, ...own.filter((_, i) => i !== best)]
    })
  }

  // Runs one pull of `target` from `source`, counted on its path while it runs.
  async pull<T> (source: string, target: string, fn: () => Promise<T>): Promise<T> {
    const key = pathKey(source, target)
    bump(this.perPath, key, 1)
    bump(this.perSource, source, 1)
    try {
      return await fn()
    } finally {
      bump(this.perPath, key, -1)
      bump(this.perSource, source, -1)
    }
  }
}
