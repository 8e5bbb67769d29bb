// What a duty refuses to act on (a corrupt record, a plan it cannot make), logged once per disk
// and reason — a sweep every few seconds must not repeat the same line for ever — and shown in
// `ukai controller status` until the disk is fine again.
import { Logger } from '../log'

export class Refusals {
  private readonly why = new Map<string, string>()
  private readonly logged = new Map<string, string>()
  constructor (private readonly log: Logger) {}

  // logAs: what makes the reason new for the log, when the reason shown carries figures that
  // change at every sweep (a postponed repair's p99s): logged again only when that changes.
  refuse (disk: string, reason: string, msg: string, logAs: string = reason): void {
    const shown = this.why.get(disk)
    this.why.set(disk, reason)
    if (shown === reason || this.logged.get(disk) === logAs) return
    this.logged.set(disk, logAs)
    this.log.warn({ disk, reason }, msg)
  }

  clear (disk: string): void { this.why.delete(disk); this.logged.delete(disk) }

  snapshot (): Record<string, string> { return Object.fromEntries(this.why) }
}
