// Polling for a condition another process brings about, with a deadline that names what it
// waited for.

// Calls `fn` until it returns something other than undefined, and returns that.
export async function untilValue<T> (what: string, fn: () => Promise<T | undefined>, timeoutMs: number, intervalMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

// Calls `check` until it returns true.
export async function until (what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs: number): Promise<void> {
  await untilValue(what, async () => (await check()) ? true : undefined, timeoutMs, intervalMs)
}
