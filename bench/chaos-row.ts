// One row of a chaos case's report (bench/chaos.ts prints and stores them).
export interface ChaosRow {
  fault: string
  bytesWritten: number
  bytesVerified: number
  bytesLost: number      // must be 0
  writesFailed: number
  longestStallMs: number // the longest single write the guest saw
  healedMs: number | null
  notes?: string
}
