// What every bench suite shares: where results go, and numbers from the environment.
import path from 'node:path'
import { repoRoot } from '../src/dev/processes'

// BENCH_RESULTS_DIR moves them (the tests' short runs write to a temp dir, not the tree).
export const RESULTS_DIR = process.env.BENCH_RESULTS_DIR ?? path.join(repoRoot(), 'bench', 'results')

// A positive number from environment variable NAME, or `dflt` when it is unset.
export function envNumber (name: string, dflt: number): number {
  const v = process.env[name]
  if (v === undefined || v === '') return dflt
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive number`)
  return n
}
