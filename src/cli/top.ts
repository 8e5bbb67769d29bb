// `ukai top`: a dashboard an operator keeps open (over SSH, 80×24 and up). Sites and their
// nodes (liveness, capacity, round trip from one host), disks (size, blocks per site, lease
// holder, STALE/LOW: blocks with a stale replica / blocks below the disk's replica count, I/O and
// its QoS cap) and relocations (progress bar, rate, ETA). Everything is redrawn from
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
import { formatQosShort } from '../admin/disk-qos'
import { paceText, relocationProgress } from '../relocate/progress'
import { withMeta } from './context'
import { formatRtt } from './node-commands'
import { printJson } from './output'
import { idOption } from './parse'
import { summarizeSites } from './site-commands'

const REDRAW_DEBOUNCE_MS = 100
// `top --once` into a pipe or file: as wide as the smallest terminal an operator has.
const ONCE_WIDTH = 80
const BAR_WIDTH = 20
// The BLOCKS PER SITE column: two sites' counts fit; at 80 columns some room is left for I/O.
const PER_SITE_CHARS = 20

interface DiskState {
  record: DiskRecord | null
  blocks: number
  blocksPerSite: Record<string, number>
  staleBlocks: number
  belowReplicaBlocks: number  // fewer in-sync replicas than the disk's count: redundancy lost
  scrubBad: number | null     // replicas `ukai scrub` found bad, all runs (null: never scrubbed)
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
  // The terminal, or null for `--once` / `--json` (one frame for a script, then exit).
  private readonly ui: Ui | null
  // First disk row shown (j/k, arrows, page keys scroll the disks panel).
  private diskScroll = 0
  private diskRowsShown = 1
  // --from not given and no agent on this host: the agent whose round trips are shown was
  // picked here (`f` picks the next one).
  private fromPicked = false

  constructor (private readonly meta: MetaStore, private from: string | null, private readonly quit: () => void, opts: { screen: boolean }) {
    this.ui = opts.screen ? makeUi() : null
    if (this.ui !== null) {
      const screen = this.ui.screen
      screen.key(['q', 'C-c'], () => { this.quit() })
      screen.key(['j', 'down'], () => { this.scrollDisks(1) })
      screen.key(['k', 'up'], () => { this.scrollDisks(-1) })
      screen.key(['pagedown', 'space'], () => { this.scrollDisks(this.diskRowsShown) })
      screen.key(['pageup'], () => { this.scrollDisks(-this.diskRowsShown) })
      screen.key(['f'], () => { this.nextFrom() })
      screen.on('resize', () => { this.render() })
    }
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
      // This host's agent; on a host that is none (an admin box), the first running agent.
      const alive = this.agents.filter(a => a.alive !== null).map(a => a.host).sort()
      this.from = this.agents.some(a => a.host === os.hostname()) ? os.hostname() : alive[0] ?? null
      this.fromPicked = this.from !== null && this.from !== os.hostname()
    }
    await this.loadRtt()
    this.scheduleRedraw()
  }

  // `f`: round trips from the next running agent.
  private nextFrom (): void {
    const alive = this.agents.filter(a => a.alive !== null).map(a => a.host).sort()
    if (alive.length === 0) return
    this.from = alive[(alive.indexOf(this.from ?? '') + 1) % alive.length]
    this.fromPicked = true
    this.rtt = null
    this.loadRtt().catch(err => this.fail(err))
    this.scheduleRedraw()
  }

  private async loadRtt (): Promise<void> {
    if (this.from === null) return
    const from = this.from
    const rtt = await this.meta.getRtt(from, this.watch(`rtt:${from}`, async () => { if (this.from === from) await this.loadRtt() }))
    if (this.from === from) this.rtt = rtt
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
      this.disks.set(name, { record: null, blocks: 0, blocksPerSite: {}, staleBlocks: 0, belowReplicaBlocks: 0, scrubBad: null, leaseHolder: null, relocation: null, writtenBytes: null, writtenAtMs: 0 })
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
      d.scrubBad = (await this.meta.getScrubRecord(name))?.mismatchesTotal ?? null
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
    if (this.closed || this.ui === null || this.redrawTimer !== null) return
    this.redrawTimer = setTimeout(() => { this.redrawTimer = null; this.render() }, REDRAW_DEBOUNCE_MS)
  }

  // Written bytes of every disk, now (for one frame: the dashboard refreshes them as it goes).
  async loadWritten (): Promise<void> {
    await Promise.all([...this.disks.entries()].map(async ([name, d]) => { d.writtenAtMs = 0; await this.refreshWritten(name) }))
  }

  // What the dashboard shows, as lines of at most `width` characters.
  frame (width: number): { header: string, sites: string[], disks: string[], relocations: string[] } {
    const time = new Date().toLocaleTimeString('en-GB', { hour12: false })
    const from = this.from === null ? '(no agent; --from HOST)' : this.fromPicked && this.ui !== null ? `${this.from} (f: next)` : this.from
    const capped = [...this.disks.values()].filter(d => d.record?.qos !== undefined).length
    const header = fit(` ukai top — ${this.nodes.length} nodes, ${this.disks.size} disks${capped > 0 ? ` (${capped} capped)` : ''} — RTT from ${from} — ${time}${this.ui !== null ? '   q: quit' : ''}${this.error !== '' ? '   ! ' + this.error : ''}`, width + 2)

    const sites: string[] = []
    for (const s of summarizeSites(this.nodes, this.agents)) {
      sites.push(fit(`${s.site}  nodes ${s.nodesAlive}/${s.nodes.length}  agents ${s.agents.join(',') || '-'}  used ${formatBytes(s.usedBytes)} of ${formatBytes(s.capacityBytes)}, ${formatBytes(s.freeBytes)} free`, width))
      for (const n of this.nodes.filter(n => n.site === s.site).sort((a, b) => a.id.localeCompare(b.id))) {
        const cap = n.alive === null ? '-' : `${formatBytes(n.alive.usedBytes)} / ${formatBytes(n.alive.capacityBytes)}`
        sites.push(fit(`  ${cell(n.id, 10)} ${cell(({ up: 'alive', full: 'FULL', down: 'DOWN' } as const)[nodeState(n.alive)], 6)} ${cell(cap, 22)} rtt ${cell(formatRtt(this.rtt?.rttMs[n.id]), 9)} ${n.alive?.address ?? n.address}`, width))
      }
    }

    const disks = this.shownDisks()
    const dl = [fit(`${cell('NAME', 14)} ${cell('SIZE', 9)} ${cell('WRITTEN', 9)} ${cell('BLOCKS PER SITE', PER_SITE_CHARS)} ${cell('LEASE', 8)} ${cell('STALE/LOW', 9)} ${cell('BAD', 4)} I/O r/w per s [qos cap]`, width)]
    for (const [name, d] of disks) {
      const io = this.rateOfDisk(name)
      dl.push(fit(`${cell(name, 14)} ${cell(formatBytes(d.record!.sizeBytes), 9)} ${cell(d.writtenBytes === null ? '-' : formatBytes(d.writtenBytes), 9)} ${cell(perSite(d), PER_SITE_CHARS)} ${cell(d.leaseHolder ?? '-', 8)} ${cell(`${d.staleBlocks}/${d.belowReplicaBlocks}`, 9)} ${cell(d.scrubBad === null ? '-' : String(d.scrubBad), 4)} ${formatBytes(io.readBps)}/${formatBytes(io.writeBps)}${localShare(io)}${d.record!.qos === undefined ? '' : ` [${formatQosShort(d.record!.qos)}]`}`, width))
    }

    const rl: string[] = []
    for (const [name, d] of disks) {
      const r = d.relocation
      if (r === null) continue
      const p = relocationProgress(r)
      const filled = Math.round(p.fraction * BAR_WIDTH)
      const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}] ${String(p.percent).padStart(3)}%`
      const running = r.state === 'copying' || r.state === 'flipping'
      const eta = !running ? '' : p.etaSec !== null ? `ETA ${duration(p.etaSec)}` : 'ETA ?'
      rl.push(fit(`${cell(name, 14)} → ${cell(r.targetNodes.join(','), 12)} ${cell(r.state, 9)} ${bar}  ${eta}`, width))
      rl.push(fit(`    ${formatBytes(p.doneBytes)} of ${formatBytes(p.totalBytes)}${p.rateBytesPerSec > 0 ? `, ${formatRate(p.rateBytesPerSec)}` : ''}, by ${r.executor || '-'}${r.reason !== '' ? ' — ' + r.reason : paceText(r) !== '' ? ' — ' + paceText(r) : ''}`, width))
    }
    return { header, sites, disks: dl, relocations: rl.length > 0 ? rl : ['(none)'] }
  }

  // What `top --json` prints: the same figures, whole.
  snapshot (): unknown {
    return {
      from: this.from,
      sites: summarizeSites(this.nodes, this.agents),
      nodes: this.nodes.map(n => ({ id: n.id, site: n.site, state: nodeState(n.alive), usedBytes: n.alive?.usedBytes ?? null, capacityBytes: n.alive?.capacityBytes ?? null, rttMs: this.rtt?.rttMs[n.id] ?? null, address: n.alive?.address ?? n.address })),
      disks: this.shownDisks().map(([name, d]) => ({
        name, sizeBytes: d.record!.sizeBytes, writtenBytes: d.writtenBytes, blocks: d.blocks, blocksPerSite: d.blocksPerSite,
        staleBlocks: d.staleBlocks, belowReplicaBlocks: d.belowReplicaBlocks, scrubBad: d.scrubBad, leaseHolder: d.leaseHolder, qos: d.record!.qos ?? null
      })),
      relocations: this.shownDisks().filter(([, d]) => d.relocation !== null).map(([name, d]) => {
        const { version: _v, ...r } = d.relocation as RelocationRecord & { version?: number }
        return { ...r, disk: name, ...relocationProgress(r) }
      })
    }
  }

  private shownDisks (): Array<[string, DiskState]> {
    return [...this.disks.entries()].filter(([, d]) => d.record !== null).sort((a, b) => a[0].localeCompare(b[0]))
  }

  private scrollDisks (by: number): void {
    this.diskScroll = Math.max(0, this.diskScroll + by)
    this.render()
  }

  render (): void {
    if (this.closed || this.ui === null) return
    const ui = this.ui
    const width = Math.max(40, (ui.screen.width as number) - 2)
    const rows = Math.max(10, ui.screen.height as number)
    const f = this.frame(width)
    ui.header.setContent(f.header)
    // Heights: each panel as tall as it needs, sites and relocations at most 40% and 30% of the
    // screen; the disks panel takes the rest, and scrolls when it has more rows than that.
    const avail = rows - 1
    const sitesH = Math.min(f.sites.length + 2, Math.max(3, Math.floor(avail * 0.4)))
    const relocH = Math.min(f.relocations.length + 2, Math.max(3, Math.floor(avail * 0.3)))
    const disksH = Math.max(3, avail - sitesH - relocH)
    ui.sitesBox.top = 1; ui.sitesBox.height = sitesH
    ui.disksBox.top = 1 + sitesH; ui.disksBox.height = disksH
    ui.relocBox.top = 1 + sitesH + disksH; ui.relocBox.height = Math.max(3, avail - sitesH - disksH)
    ui.sitesBox.setContent(f.sites.join('\n'))
    // The disks panel: its header, then the rows that fit; "+N more" says how many do not.
    const [head, ...diskRows] = f.disks
    const room = Math.max(1, disksH - 3)
    const scrolls = diskRows.length > room
    this.diskRowsShown = scrolls ? room - 1 : room
    this.diskScroll = Math.min(this.diskScroll, Math.max(0, diskRows.length - this.diskRowsShown))
    const shown = diskRows.slice(this.diskScroll, this.diskScroll + this.diskRowsShown)
    const below = diskRows.length - this.diskScroll - shown.length
    const more = !scrolls ? [] : [fit(`  … ${this.diskScroll > 0 ? `${this.diskScroll} above, ` : ''}+${below} more (j/k or arrows scroll)`, width)]
    ui.disksBox.setContent([head, ...shown, ...more].join('\n'))
    ui.relocBox.setContent(f.relocations.join('\n'))
    ui.screen.render()
  }

  close (): void {
    if (this.closed) return
    this.closed = true
    if (this.redrawTimer !== null) clearTimeout(this.redrawTimer)
    this.ui?.screen.destroy()
  }
}

interface Ui {
  screen: blessed.Widgets.Screen
  header: blessed.Widgets.BoxElement
  sitesBox: blessed.Widgets.BoxElement
  disksBox: blessed.Widgets.BoxElement
  relocBox: blessed.Widgets.BoxElement
}

function makeUi (): Ui {
  const screen = blessed.screen({ smartCSR: true, title: 'ukai top', warnings: false, fullUnicode: false })
  const header = blessed.box({ parent: screen, top: 0, left: 0, width: '100%', height: 1, tags: false, style: { inverse: true } })
  const box = (label: string): blessed.Widgets.BoxElement => blessed.box({
    parent: screen, label: ` ${label} `, top: 1, left: 0, width: '100%', height: 3, border: { type: 'line' }, tags: false
  })
  return { screen, header, sitesBox: box('sites and nodes'), disksBox: box('disks'), relocBox: box('relocations') }
}

// "site-a:64 of 64"; a disk in several sites drops " of N" before it is cut to the column.
function perSite (d: DiskState): string {
  const sites = Object.entries(d.blocksPerSite).sort().map(([s, n]) => `${s}:${n}`).join(' ') || '-'
  const full = `${sites} of ${d.blocks}`
  return full.length <= PER_SITE_CHARS ? full : sites
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
// A column of exactly n characters: padded, or cut with '…' (a long value never shifts the rest).
function cell (s: string, n: number): string { return pad(fit(s, n), n) }

export function topCommand (program: Command): void {
  program.command('top')
    .description('a live dashboard: sites, nodes and round trips, disks, relocations (q quits, j/k scroll the disks, f: round trips from the next agent)')
    .option('--from <host>', 'show round trips measured by the agent on HOST (default: this host\'s agent, else the first running agent)', idOption('host name in --from'))
    .option('--once', 'print one frame as text (80 columns, or the terminal\'s width) and exit, for scripts and logs')
    .option('--json', 'print the same figures once as JSON and exit')
    .action(async (opts, cmd: Command) => {
      if (opts.once === true || opts.json === true) {
        await withMeta(cmd, async (meta) => {
          const dash = new Dashboard(meta, opts.from ?? null, () => {}, { screen: false })
          try {
            await dash.start()
            await dash.loadWritten()
            if (opts.json === true) { printJson(dash.snapshot()); return }
            const f = dash.frame(Math.max(40, process.stdout.isTTY === true ? process.stdout.columns : ONCE_WIDTH))
            process.stdout.write([f.header.trim(), '', ...f.sites, '', ...f.disks, '', ...f.relocations, ''].join('\n'))
          } finally {
            dash.close()
          }
        })
        return
      }
      await withMeta(cmd, async (meta) => {
        await new Promise<void>((resolve, reject) => {
          const dash = new Dashboard(meta, opts.from ?? null, () => { dash.close(); resolve() }, { screen: true })
          dash.start().then(() => dash.render(), (err) => { dash.close(); reject(err) })
        })
      })
      process.exit(0)
    })
}
