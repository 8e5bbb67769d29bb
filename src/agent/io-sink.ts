// What the mount tells of each guest request it answered on a disk, for the metrics (src/metrics
// implements it; the agent imports nothing of it). Called on the data path after the request
// completed, so an implementation only adds to numbers it already holds: no allocation, no I/O.
// `startMs` is performance.now() when the request arrived (monotonic, a double: no BigInt per
// request as process.hrtime.bigint() would make).
export interface DiskIoSink {
  read: (disk: string, bytes: number, startMs: number) => void
  write: (disk: string, bytes: number, startMs: number) => void
  flush: (disk: string, startMs: number) => void
  failed: (disk: string, op: 'read' | 'write' | 'flush') => void
}
