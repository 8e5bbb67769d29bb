// Limits that more than one room enforces, declared once. A limit only one room uses stays at the
// top of the file that uses it (wire.ts: MAX_IO_BYTES, MAX_MESSAGE_BYTES).

// A disk's block size: a power of two in this range (docs/architecture.md). The disk engine,
// the export stream and the storage node's range checks all bound a block by these.
export const BLOCK_SIZE_MIN_BYTES = 64 * 1024
export const BLOCK_SIZE_MAX_BYTES = 64 * 1024 * 1024

// Reads and writes up to this size call pread/pwrite on the event loop instead of the libuv
// thread pool (the storage node's block files; the agent's short-circuit reads of them).
// Buffered I/O of this size costs 2-20 µs of CPU when it hits the page cache; the pool's round
// trip (a worker wakes, then the loop wakes again) costs 30-120 µs on this 2-core machine and two
// scheduler wake-ups, which dominates a 4 KiB request's latency. The price: a page-cache miss or
// dirty-page throttling blocks the loop for that one I/O. fsync, clone and larger transfers stay
// on the pool.
export const SYNC_IO_MAX_BYTES = 256 * 1024
