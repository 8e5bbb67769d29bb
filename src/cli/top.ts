// `ukai top`: a dashboard an operator keeps open (over SSH, 80×24 and up). Sites and their
// nodes (liveness, capacity, round trip from one host), disks (size, blocks per site, lease
// holder, STALE/LOW: blocks with a stale replica / blocks below the disk's replica count) and relocations (progress bar, rate, ETA). Everything is redrawn from
// ZooKeeper watches — on the node list and liveness, the disk list, every disk's record,
// placement, lease and relocation, and the chosen host's round-trip report — debounced; there is
// no polling loop. `q` (or Ctrl-C) quits.
import os from 'node:os'
import blessed from 'blessed'
import { Command } from 'commander'
import { isUkaiError, safetyCatch } from '../errors'
import { readLease } from '../meta/lease'
import { DiskIoCounters, DiskRecord, RelocationRecord, RttReport } from '../meta/schema'
import { AgentView, MetaStore, NodeView } from '../meta/store'
import { StorageClient } from '../storagenode/client'
import { formatBytes, formatRate } from '../units'
import { countPlacement, nodeState } from '../admin/disk-summary'
import { relocationProgress } from '../relocate/progress'
import { withMeta } from './context'
import { formatRtt } from './node-commands'
import { idOption } from './parse'
import { summarizeSites } from './site-commands'

const REDRAW_DEBOUNCE_MS = 100
const BAR_WIDTH = 20

interface DiskState {
  record: DiskRecord | null
  blocks: number
  blocksPerSite: Record<string, number>
  staleBlocks: number
  belowReplicaBlocks: number  // fewer in-sync replicas than the disk's count: redundancy lost
  leaseHolder: string | null
  relocation: RelocationRecord | null
  writtenBytes: number | null // blocks with data on an in-sync replica × block size
  writtenAtMs: number
}

// Per-host I/O reports (published with the round trips): the last one seen, and per disk the
// rate between the last two.
interface HostIo { atMs: number, io: Record<string, DiskIoCounters> }
// localReadBps: the part of readBps read straight from same-host nodes' files (short-circuit).
interface IoRate { readBps: number, writeBps: number, localReadBps: number }
const WRITTEN_REFRESH_MS = 2000

class Dashboard {
  private nodes: NodeView[] = []
  private agents: AgentView[] = []
  private rtt: RttReport | null = null
  private readonly disks = new Map<string, DiskState>()
  private readonly hostIo = new Map<string, HostIo>()
  private readonly ioRate = new Map<string, Map<string, IoRate>>() // host → disk → rate
  private error = ''
  private redrawTimer: NodeJS.Timeout | null = null
  private closed = false
  // Watches set and not fired yet, by what they watch: ZooKeeper watches fire once, and the
  // client keeps every one we set, so each thing is watched at most once at a time.
  private armed = new Set<string>()
  private readonly screen: blessed.Widgets.Screen
  private readonly header: blessed.Widgets.BoxElement
  private readonly sitesBox: blessed.Widgets.BoxElement
  private readonly disksBox: blessed.Widgets.BoxElement
  private readonly relocBox: blessed.Widgets.BoxElement

  constructor (private readonly meta: MetaStore, private from: string | null, private readonly quit: () => void) {
    this.screen = blessed.screen({ smartCSR: true, title: 'ukai top', warnings: false, fullUnicode: false })
    this.header = blessed.box({ parent: this.screen, top: 0, left: 0, width: '100%', height: 1, tags: false, style: { inverse: true } })
    const box = (label: string, top: number | string, height: number | string): blessed.Widgets.BoxElement => blessed.box({
      parent: this.screen, label: ` ${label} `, top, left: 0, width: '100%', height, border: { type: 'line' }, tags: false, scrollable: true, alwaysScroll: true
    })
    this.sitesBox = box('sites and nodes', 1, '40%')
    this.disksBox = box('disks', '40%+1', '30%')
    this.relocBox = box('relocations', '70%+1', '30%')
    this.screen.key(['q', 'C-c'], () => { this.quit() })
    this.screen.on('resize', () => { this.render() })
    // Watches die with an expired session: set them all again on the new one.
    meta.onSession(() => {
      this.armed = new Set()
      this.loadAll().catch(safetyCatch)
    })
  }

  async start (): Promise<void> {
    await this.loadAll()
  }

  private async loadAll (): Promise<void> {
    await this.loadNodes() // first: a disk's blocks per site need the nodes' sites
    await Promise.all([this.loadDiskList(), this.loadIoHosts()])
    await Promise.all([...this.disks.keys()].map(async name => await this.loadDisk(name)))
  }

  // A watcher for KEY that runs THEN when it fires, or undefined when KEY is watched already.
  private watch (key: string, then: () => Promise<void>): (() => void) | undefined {
    if (this.armed.has(key)) return undefined
    this.armed.add(key)
    return () => {
      this.armed.delete(key)
      if (!this.closed) then().catch(err => this.fail(err))
    }
  }

  // Sets a watch through SET unless KEY is watched already.
  private async arm (key: string, set: (w: () => void) => Promise<void>, then: () => Promise<void>): Promise<void> {
    const w = this.watch(key, then)
    if (w !== undefined) await set(w)
  }

  private async loadNodes (): Promise<void> {
    const reload = async (): Promise<void> => await this.loadNodes()
    await this.arm('nodes', async w => await this.meta.watchNodeList(w), reload)
    await this.arm('nodes-alive', async w => await this.meta.watchAliveNodeList(w), reload)
    this.nodes = await this.meta.listNodes()
    for (const n of this.nodes) if (n.alive !== null) await this.arm(`alive:${n.id}`, async w => await this.meta.watchNodeAlive(n.id, w), reload)
    this.agents = await this.meta.listAgents()
    if (this.from === null) {
      const alive = this.agents.filter(a => a.alive !== null)
      this.from = this.agents.some(a => a.host === os.hostname()) ? os.hostname() : alive.length === 1 ? alive[0].host : null
    }
    await this.loadRtt()
    this.scheduleRedraw()
  }

  private async loadRtt (): Promise<void> {
    if (this.from === null) return
    this.rtt = await this.meta.getRtt(this.from, this.watch(`rtt:${this.from}`, async () => await this.loadRtt()))
    this.scheduleRedraw()
  }

  // Every host's report, watched: a new report (every ~2 s while an agent runs) carries its I/O.
  private async loadIoHosts (): Promise<void> {
    const hosts = await this.meta.listRttHosts(this.watch('rtts', async () => await this.loadIoHosts()))
    for (const h of [...this.hostIo.keys()]) if (!hosts.includes(h)) { this.hostIo.delete(h); this.ioRate.delete(h) }
    await Promise.all(hosts.map(async h => await this.loadIo(h)))
  }

  private async loadIo (host: string): Promise<void> {
    const rep = await this.meta.getRtt(host, this.watch(`io:${host}`, async () => await this.loadIo(host)))
    if (rep === null) return
    const prev = this.hostIo.get(host)
    const rates = new Map<string, IoRate>()
    const dt = prev === undefined ? 0 : (rep.measuredAtMs - prev.atMs) / 1000
    for (const [disk, c] of Object.entries(rep.io ?? {})) {
      const p = prev?.io[disk]
      if (p !== undefined && dt > 0) {
        rates.set(disk, {
          readBps: Math.max(0, c.readBytes - p.readBytes) / dt,
          writeBps: Math.max(0, c.writeBytes - p.writeBytes) / dt,
          localReadBps: Math.max(0, (c.localReadBytes ?? 0) - (p.localReadBytes ?? 0)) / dt
        })
      }
      if (p === undefined || c.writeBytes !== p.writeBytes) this.refreshWritten(disk).catch(safetyCatch)
    }
    this.hostIo.set(host, { atMs: rep.measuredAtMs, io: rep.io ?? {} })
    this.ioRate.set(host, rates)
    this.scheduleRedraw()
  }

  private rateOfDisk (disk: string): IoRate {
    const sum: IoRate = { readBps: 0, writeBps: 0, localReadBps: 0 }
    for (const m of this.ioRate.values()) {
      const r = m.get(disk)
      if (r !== undefined) { sum.readBps += r.readBps; sum.writeBps += r.writeBps; sum.localReadBps += r.localReadBps }
    }
    return sum
  }

  // Written bytes: the blocks an in-sync replica holds data for (asked of that node), refreshed
  // when the disk's map changes or an agent reports writes to it, at most every couple of seconds.
  private async refreshWritten (name: string): Promise<void> {
    const d = this.disks.get(name)
    if (d?.record == null || Date.now() - d.writtenAtMs < WRITTEN_REFRESH_MS) return
    d.writtenAtMs = Date.now()
    const seg = await this.meta.loadSegment(name, 0).catch(() => null)
    const replica = seg?.runs()[0]?.replicas.find(r => r.state === 'in-sync')
    const node = this.nodes.find(n => n.id === replica?.node && n.alive !== null)
    if (node?.alive == null) return
    const client = new StorageClient({ nodeId: node.id, address: node.alive.address, callTimeoutMs: 2000 })
    try {
      d.writtenBytes = (await client.listBlocks({ diskUuid: d.record.uuid })).length * d.record.blockSizeBytes
    } catch {
      // the node is busy or gone: keep the last figure
    } finally {
      await client.close()
    }
    this.scheduleRedraw()
  }

  private async loadDiskList (): Promise<void> {
    const names = await this.meta.listDiskNames(this.watch('disks', async () => await this.loadDiskList()))
    for (const name of [...this.disks.keys()]) if (!names.includes(name)) this.disks.delete(name)
    await Promise.all(names.filter(n => !this.disks.has(n)).map(async (name) => {
      this.disks.set(name, { record: null, blocks: 0, blocksPerSite: {}, staleBlocks: 0, belowReplicaBlocks: 0, leaseHolder: null, relocation: null, writtenBytes: null, writtenAtMs: 0 })
      await this.loadDisk(name)
    }))
    this.scheduleRedraw()
  }

  private async loadDisk (name: string): Promise<void> {
    const d = this.disks.get(name)
    if (d === undefined) return
    const reload = async (): Promise<void> => await this.loadDisk(name)
    try {
      const rec = await this.meta.getDisk(name, this.watch(`disk:${name}`, reload))
      d.record = rec
      const segmentCount = Math.ceil(Math.ceil(rec.sizeBytes / rec.blockSizeBytes) / rec.segmentBlocks)
      for (let i = 0; i < segmentCount; i++) await this.arm(`segment:${name}:${i}`, async w => await this.meta.watchSegment(name, i, w), reload)
      const segments = await this.meta.loadPlacement(rec)
      const counts = countPlacement(segments, rec.replicas, this.nodes)
      d.blocks = counts.blocks
      d.blocksPerSite = counts.blocksPerSite
      d.staleBlocks = counts.staleBlocks
      d.belowReplicaBlocks = counts.belowReplicaBlocks
      await this.arm(`lease:${name}`, async w => await this.meta.watchLease(name, w), reload)
      d.leaseHolder = (await readLease(this.meta, name)).holder?.host ?? null
      const reloc = await this.meta.getRelocation(name, this.watch(`relocation:${name}`, reload))
      d.relocation = reloc
      this.refreshWritten(name).catch(safetyCatch)
    } catch (err) {
      if (!isUkaiError(err, 'NOT_FOUND')) throw err
      this.disks.delete(name) // deleted meanwhile; the disk-list watch says so too
    }
    this.scheduleRedraw()
  }

  private fail (err: unknown): void {
    this.error = String((err as Error)?.message ?? err)
    this.scheduleRedraw()
  }

  private scheduleRedraw (): void {
    if (this.closed || this.redrawTimer !== null) return
    this.redrawTimer = setTimeout(() => { this.redrawTimer = null; this.render() }, REDRAW_DEBOUNCE_MS)
  }

  render (): void {
    if (this.closed) return
    const width = Math.max(40, (this.screen.width as number) - 2)
    const time = new Date().toLocaleTimeString('en-GB', { hour12: false })
    this.header.setContent(fit(` ukai top — ${this.nodes.length} nodes, ${this.disks.size} disks — RTT from ${this.from ?? '(no agent; --from HOST)'} — ${time}   q: quit${this.error !== '' ? '   ! ' + this.error : ''}`, width + 2))

    const lines: string[] = []
    for (const s of summarizeSites(this.nodes, this.agents)) {
      lines.push(fit(`${s.site}  nodes ${s.nodesAlive}/${s.nodes.length}  agents ${s.agents.join(',') || '-'}  used ${formatBytes(s.usedBytes)} of ${formatBytes(s.capacityBytes)}, ${formatBytes(s.freeBytes)} free`, width))
      for (const n of this.nodes.filter(n => n.site === s.site).sort((a, b) => a.id.localeCompare(b.id))) {
        const cap = n.alive === null ? '-' : `${formatBytes(n.alive.usedBytes)} / ${formatBytes(n.alive.capacityBytes)}`
        lines.push(fit(`  ${pad(n.id, 10)} ${pad(({ up: 'alive', full: 'FULL', down: 'DOWN' } as const)[nodeState(n.alive)], 6)} ${pad(cap, 22)} rtt ${pad(formatRtt(this.rtt?.rttMs[n.id]), 9)} ${n.alive?.address ?? n.address}`, width))
      }
    }
    this.sitesBox.setContent(lines.join('\n'))

    const disks = [...this.disks.entries()].filter(([, d]) => d.record !== null).sort((a, b) => a[0].localeCompare(b[0]))
    const dl = [fit(`${pad('NAME', 14)} ${pad('SIZE', 9)} ${pad('WRITTEN', 9)} ${pad('BLOCKS PER SITE', 24)} ${pad('LEASE', 8)} ${pad('STALE/LOW', 9)} I/O r/w per s`, width)]
    for (const [name, d] of disks) {
      const perSite = Object.entries(d.blocksPerSite).sort().map(([s, n]) => `${s}:${n}`).join(' ') || '-'
      const io = this.rateOfDisk(name)
      dl.push(fit(`${pad(name, 14)} ${pad(formatBytes(d.record!.sizeBytes), 9)} ${pad(d.writtenBytes === null ? '-' : formatBytes(d.writtenBytes), 9)} ${pad(`${perSite} of ${d.blocks}`, 24)} ${pad(d.leaseHolder ?? '-', 8)} ${pad(`${d.staleBlocks}/${d.belowReplicaBlocks}`, 9)} ${formatBytes(io.readBps)}/${formatBytes(io.writeBps)}${localShare(io)}`, width))
    }
    this.disksBox.setContent(dl.join('\n'))

    const rl: string[] = []
    for (const [name, d] of disks) {
      const r = d.relocation
      if (r === null) continue
      const p = relocationProgress(r)
      const filled = Math.round(p.fraction * BAR_WIDTH)
      const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(p.percent).padStart(3)}%`
      const running = r.state === 'copying' || r.state === 'flipping'
      const eta = !running ? '' : p.etaSec !== null ? `ETA ${duration(p.etaSec)}` : 'ETA ?'
      rl.push(fit(`${pad(name, 14)} → ${pad(r.targetNodes.join(','), 12)} ${pad(r.state, 9)} ${bar}  ${eta}`, width))
      rl.push(fit(`    ${formatBytes(p.doneBytes)} of ${formatBytes(p.totalBytes)}${p.rateBytesPerSec > 0 ? `, ${formatRate(p.rateBytesPerSec)}` : ''}, by ${r.executor || '-'}${r.reason !== '' ? ' — ' + r.reason : ''}`, width))
    }
    this.relocBox.setContent(rl.length > 0 ? rl.join('\n') : '(none)')
    this.screen.render()
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    if (this.redrawTimer !== null) clearTimeout(this.redrawTimer)
    this.screen.destroy()
  }
}

function duration (sec: number): string {
  if (!Number.isFinite(sec)) return '?'
  const s = Math.round(sec)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}:${String(s % 60).padStart(2, '0')}`
}

// ' (80% local)' when some reads of the disk were short-circuit reads, else nothing.
function localShare (io: IoRate): string {
  if (io.readBps <= 0 || io.localReadBps <= 0) return ''
  return ` (${Math.min(100, Math.round(100 * io.localReadBps / io.readBps))}% local)`
}

function pad (s: string, n: number): string { return s.length >= n ? s : s + ' '.repeat(n - s.length) }
function fit (s: string, n: number): string { return s.length <= n ? s : s.slice(0, Math.max(0, n - 1)) + '…' }

export function topCommand (program: Command): void {
  program.command('top')
    .description('a live dashboard: sites, nodes and round trips, disks, relocations (q quits)')
    .option('--from <host>', 'show round trips measured by the agent on HOST (default: this host, or the only agent)', idOption('host name in --from'))
    .action(async (opts, cmd: Command) => {
      await withMeta(cmd, async (meta) => {
        await new Promise<void>((resolve, reject) => {
          const dash = new Dashboard(meta, opts.from ?? null, () => { dash.close(); resolve() })
          dash.start().then(() => dash.render(), (err) => { dash.close(); reject(err) })
        })
      })
      process.exit(0)
    })
}
