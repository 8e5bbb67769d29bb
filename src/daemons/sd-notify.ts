// Readiness for systemd (`Type=notify` units, libvirt/systemd/): the daemons say READY=1 once they
// serve — the mount exists, the node answers and is registered — so `Before=libvirtd.service`
// means the disks are there, and STOPPING=1 when they start draining. Under no systemd
// (NOTIFY_SOCKET unset: dev clusters, tests) every call is a no-op. Sent with libsystemd's
// sd_notify (native/sd-notify): Node's dgram module has no AF_UNIX datagram sockets.
import { loadNative } from '../native'

interface SdNotifyAddon { notify: (state: string) => number }
let addon: SdNotifyAddon | null = null

// True when systemd was told (false: not under a notify unit). Throws only when the socket named
// by NOTIFY_SOCKET cannot be written: the unit would then time out, so say it loudly.
export function sdNotify (fields: { ready?: boolean, stopping?: boolean, status?: string, mainPid?: number }): boolean {
  if (process.env.NOTIFY_SOCKET === undefined || process.env.NOTIFY_SOCKET === '') return false
  const lines: string[] = []
  if (fields.ready === true) lines.push('READY=1')
  if (fields.stopping === true) lines.push('STOPPING=1')
  if (fields.mainPid !== undefined) lines.push(`MAINPID=${fields.mainPid}`)
  // One line: a newline in a status would start a new field.
  if (fields.status !== undefined) lines.push(`STATUS=${fields.status.replace(/\n/g, ' ').slice(0, 200)}`)
  if (lines.length === 0) return false
  addon ??= loadNative<SdNotifyAddon>('sd-notify/build/Release/sd_notify.node')
  return addon.notify(lines.join('\n')) > 0
}
