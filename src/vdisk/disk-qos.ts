// A disk record's QoS (src/meta/schema.ts DiskQos) as the limits of the disk engine's throttle
// (src/lib/io-throttle.ts). One place computes the effective burst, so the engine, `disk info`
// and `ukai top` agree on it.
import { DiskQos, DiskRecord, readDiskQos } from '../meta/schema'
import { ThrottleLimits, UNLIMITED } from '../lib/io-throttle'
import { Logger } from '../log'

export const QOS_BURST_SECONDS_DEFAULT = 1

export function throttleLimitsOf (q: DiskQos | null): ThrottleLimits {
  if (q === null) return UNLIMITED
  const seconds = q.burstSeconds ?? QOS_BURST_SECONDS_DEFAULT
  return {
    opsPerSec: q.iops,
    bytesPerSec: q.bytesPerSec,
    burstOps: q.iops === 0 ? 0 : Math.max(1, q.burstIops ?? Math.round(q.iops * seconds)),
    burstBytes: q.bytesPerSec === 0 ? 0 : Math.max(1, q.burstBytes ?? Math.round(q.bytesPerSec * seconds))
  }
}

// The limits a record asks for; `previous` when its qos has a format this ukai does not read
// (logged: the operator must know the limits did not change).
export function limitsOfRecord (rec: DiskRecord, previous: ThrottleLimits, log: Logger): ThrottleLimits {
  try {
    return throttleLimitsOf(readDiskQos(rec))
  } catch (err) {
    log.error({ disk: rec.name, err: String(err) }, 'disk qos not understood; keeping the previous limits')
    return previous
  }
}
