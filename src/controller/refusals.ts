// What a duty refuses to act on (a corrupt record, a plan it cannot make), logged once per disk
// and reason — a sweep every few seconds must not repeat the same line for ever — and shown in
// `ukai controller status` until the disk is fine again.
import { Logger } from '../log'

export class Refusals {
  private readonly why = new Map<string, string>()
  constructor (private readonly log: Logger) {}

  refuse (disk: string, reason: string, msg: string): void {
    if (this.why.get(disk) === reason) return
    this.why.set(disk, reason)
    this.log.warn({ disk, reason }, msg)
  }

  clear (disk: string): void { this.why.delete(disk) }

  snapshot (): Record<string, string> { return Object.fromEntries(this.why) }
}
