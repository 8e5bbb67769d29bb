// Cleanup steps for a benchmark run, also on Ctrl-C: processes, mounts, temp dirs.
export class Cleanup {
  private readonly steps: Array<{ what: string, fn: () => Promise<void> | void }> = []
  private running: Promise<void> | null = null

  add (what: string, fn: () => Promise<void> | void): void { this.steps.push({ what, fn }) }

  // Runs every step once, newest first; reports failures but never throws.
  run (): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.reverse()) {
        try { await step.fn() } catch (err) { process.stderr.write(`cleanup: ${step.what}: ${(err as Error).message}\n`) }
      }
    })()
    return this.running
  }
}
