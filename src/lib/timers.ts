// The one place src/ waits for time to pass (undici's habit): every pause, poll and back-off goes
// through `sleep`, so a test can swap the clock once (`useTimers`) instead of patching ten call
// sites. Timers that guard a call (deadlines, watchdogs) stay with the code that clears them.

export interface Timers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout)
}

let timers: Timers = realTimers

// For tests: route every sleep through `fake` until the returned function restores the real clock.
export function useTimers (fake: Timers): () => void {
  timers = fake
  return () => { timers = realTimers }
}

// Resolves after `ms` (as setTimeout: less than 1 ms waits 1 ms). With `signal`: rejects with its
// reason as soon as it aborts, and the timer is cleared.
export async function sleep (ms: number, opts: { signal?: AbortSignal } = {}): Promise<void> {
  const signal = opts.signal
  if (signal === undefined) {
    await new Promise<void>(resolve => { timers.setTimeout(resolve, ms) })
    return
  }
  signal.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => { timers.clearTimeout(handle); reject(signal.reason) }
    const handle = timers.setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve() }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
