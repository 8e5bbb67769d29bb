// The one file that spells ZooKeeper paths and znode encodings (the placement segments' binary
// encoding is segment-codec.ts). Every value carries a format version; a reader refuses a
// version it does not know instead of guessing.
//
// /ukai/config                          ClusterConfig (JSON)
// /ukai/nodes/<id>                      NodeRecord, persistent
// /ukai/nodes-alive/<id>                NodeAlive, ephemeral (liveness, usage)
// /ukai/node-states/<id>                NodeLifecycle, persistent: since when down, out, draining, removed
// /ukai/agents/<host>                   AgentRecord, persistent
// /ukai/agents-alive/<host>             AgentAlive, ephemeral
// /ukai/disks/<name>                    DiskRecord
// /ukai/disks/<name>/fence              FenceRecord: the disk's newest lease epoch (and whether its holder released it)
// /ukai/disks/<name>/lease              LeaseRecord, ephemeral: who writes the disk
// /ukai/disks/<name>/handover           HandoverRequest, ephemeral: someone wants the lease
// /ukai/disks/<name>/opens/<host>       ephemeral: that host has the disk file open
// /ukai/disks/<name>/segments/<i>       placement segment i (binary, run-length encoded: segment-codec.ts)
// /ukai/disks/<name>/relocation         RelocationRecord: the plan and progress of a relocation
// /ukai/disks/<name>/scrub              ScrubRecord: counts of the last `ukai scrub` and totals
// /ukai/disks/<name>/snapshots/<snap>   SnapshotRecord: a committed, immutable epoch of the disk
// /ukai/disks/<name>/snapshot-request   SnapshotRequest, ephemeral: commit a snapshot (the lease holder does)
// /ukai/rtt/<host>                      RttReport, ephemeral: round trips from that host to nodes
// /ukai/controller/election/<session>-n_<seq>  ControllerCandidate, ephemeral sequential: one per
//                                       controller candidate; the lowest sequence leads
// /ukai/controller/leader               ControllerLeader, ephemeral: who leads, since when, its duties
// /ukai/tenants/<name>                  TenantRecord: the tenant's quotas and its usage ledger (src/meta/tenants.ts)
// /ukai/crl                             CrlRecord: the CA-signed certificate revocation list (src/meta/crl-record.ts)
import { UkaiError, UkaiErrorCode } from '../errors'

export const ROOT = '/ukai'
export const paths = {
  root: ROOT,
  config: `${ROOT}/config`,
  nodes: `${ROOT}/nodes`,
  node: (id: string) => `${ROOT}/nodes/${id}`,
  nodesAlive: `${ROOT}/nodes-alive`,
  nodeAlive: (id: string) => `${ROOT}/nodes-alive/${id}`,
  nodeStates: `${ROOT}/node-states`,
  nodeState: (id: string) => `${ROOT}/node-states/${id}`,
  agents: `${ROOT}/agents`,
  agent: (host: string) => `${ROOT}/agents/${host}`,
  agentsAlive: `${ROOT}/agents-alive`,
  agentAlive: (host: string) => `${ROOT}/agents-alive/${host}`,
  disks: `${ROOT}/disks`,
  disk: (name: string) => `${ROOT}/disks/${name}`,
  fence: (name: string) => `${ROOT}/disks/${name}/fence`,
  lease: (name: string) => `${ROOT}/disks/${name}/lease`,
  handover: (name: string) => `${ROOT}/disks/${name}/handover`,
  opens: (name: string) => `${ROOT}/disks/${name}/opens`,
  open: (name: string, host: string) => `${ROOT}/disks/${name}/opens/${host}`,
  segments: (name: string) => `${ROOT}/disks/${name}/segments`,
  segment: (name: string, index: number) => `${ROOT}/disks/${name}/segments/${index}`,
  relocation: (name: string) => `${ROOT}/disks/${name}/relocation`,
  scrub: (name: string) => `${ROOT}/disks/${name}/scrub`,
  snapshots: (name: string) => `${ROOT}/disks/${name}/snapshots`,
  snapshot: (name: string, snap: string) => `${ROOT}/disks/${name}/snapshots/${snap}`,
  snapshotRequest: (name: string) => `${ROOT}/disks/${name}/snapshot-request`,
  rtts: `${ROOT}/rtt`,
  rtt: (host: string) => `${ROOT}/rtt/${host}`,
  controller: `${ROOT}/controller`,
  controllerElection: `${ROOT}/controller/election`,
  controllerCandidate: (name: string) => `${ROOT}/controller/election/${name}`,
  controllerLeader: `${ROOT}/controller/leader`,
  tenants: `${ROOT}/tenants`,
  tenant: (name: string) => `${ROOT}/tenants/${name}`,
  crl: `${ROOT}/crl`
}
// An election znode's name: the candidate's session id (so a create retried after a connection
// loss finds the one it made) and the sequence ZooKeeper appends.
export const CANDIDATE_SEQUENCE_MARK = '-n_'
export function candidatePrefix (sessionId: string): string { return `${sessionId}${CANDIDATE_SEQUENCE_MARK}` }
export function candidateSequence (name: string): number {
  const at = name.lastIndexOf(CANDIDATE_SEQUENCE_MARK)
  const seq = at < 0 ? NaN : Number(name.slice(at + CANDIDATE_SEQUENCE_MARK.length))
  return Number.isSafeInteger(seq) ? seq : Number.MAX_SAFE_INTEGER // a stranger's znode never leads
}
// Directories that exist in every initialised cluster.
// (init() checks the last one: a directory added later goes at the end, so older clusters get it.)
export const BASE_DIRS = [ROOT, paths.nodes, paths.nodesAlive, paths.agents, paths.agentsAlive, paths.disks, paths.rtts, paths.nodeStates, paths.controller, paths.controllerElection, paths.tenants]

export const BLOCK_SIZE_DEFAULT_BYTES = 4 * 1024 * 1024
export const REPLICAS_MAX = 8
export const SEGMENT_BLOCKS_DEFAULT = 16384
// 2^50 bytes: far beyond any real disk, small enough that byte offsets stay exact doubles.
export const DISK_SIZE_MAX_BYTES = 2 ** 50

export interface ClusterConfig {
  v: 1
  defaultBlockSizeBytes: number
  defaultReplicas: number
  segmentBlocks: number
  // How long a storage node may be down before it is marked out and its replicas are made again
  // elsewhere (absent in clusters created before it existed: DOWN_OUT_MS_DEFAULT).
  downOutMs?: number
  // A running copy (relocation, repair) halves its rate while a node it uses shows the guests'
  // write p99 this many ms above its idle value (and at least twice it); 0: never slowed.
  // Absent: COPY_PACE_RISE_MS_DEFAULT (relocate/copy-pace.ts says why).
  copyPaceRiseMs?: number
  // …but never below this many bytes/s, so that it always finishes. Absent: COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT.
  copyPaceFloorBytesPerSec?: number
}
// Ten minutes, as Ceph's mon_osd_down_out_interval: long enough for a reboot or a daemon
// upgrade to come back without copying anything, short enough that a second failure rarely
// finds a disk still at one copy.
export const DOWN_OUT_MS_DEFAULT = 10 * 60_000
// Longer than a week is a typo, not a policy: a disk would stay at one copy for that long.
export const DOWN_OUT_MS_MAX = 7 * 24 * 3600_000
export const COPY_PACE_RISE_MS_DEFAULT = 10
export const COPY_PACE_RISE_MS_MAX = 10_000
// One block of the default size a second: a 1 TiB repair slowed for good still ends within days.
export const COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT = 4 * 1024 * 1024
// The smallest block size a second (below it a repair of big blocks is a crawl nobody meant) …
export const COPY_PACE_FLOOR_BYTES_PER_SEC_MIN = 64 * 1024
// … and 10 GiB/s: above any link a node has, so a larger floor is a typo.
export const COPY_PACE_FLOOR_BYTES_PER_SEC_MAX = 10 * 1024 ** 3
export const DEFAULT_CONFIG: ClusterConfig = { v: 1, defaultBlockSizeBytes: BLOCK_SIZE_DEFAULT_BYTES, defaultReplicas: 2, segmentBlocks: SEGMENT_BLOCKS_DEFAULT }

export interface NodeRecord { v: 1, id: string, site: string, host: string, address: string, registeredAtMs: number }
// dataDir (absolute) and localReadToken: what an agent on the same host needs to read block files
// directly (short-circuit reads, src/vdisk/short-circuit-reads.ts); absent from nodes older than that.
export interface NodeAlive { v: 1, address: string, startedAtMs: number, capacityBytes: number, usedBytes: number, freeBytes: number, dataDir?: string, localReadToken?: string }
// A node's lifecycle, beside its record (a node rewrites its NodeRecord at every start; this
// survives that and a controller failover). Written by the controller's node-lifecycle duty
// (down, out) and by the node verbs (draining, removed). Absent: up, or down and not yet seen.
export interface NodeLifecycle {
  v: 1
  id: string
  downSinceMs: number | null                            // its liveness ephemeral went away then
  out: null | { sinceMs: number, why: 'down' }          // down longer than down-out-ms
  drainingSinceMs: number | null                        // `ukai node drain`: everything moves off it
  removedAtMs: number | null                            // `ukai node remove`: a tombstone until no map names it
}
export interface AgentRecord { v: 1, host: string, site: string, mountPoint: string }
export interface AgentAlive { v: 1, startedAtMs: number, pid: number }

export interface PlacementPolicy { site?: string, nodes?: string[] }
export interface DiskRecord {
  v: 1
  name: string
  uuid: string
  sizeBytes: number
  blockSizeBytes: number
  replicas: number
  placement: PlacementPolicy
  tenant: string
  parent: null | { disk: string, snapshot: string }
  epoch: number // snapshot epoch: writes create block versions at this epoch
  segmentBlocks: number
  createdAtMs: number
  // How the disk file looks on every mount. Both optional: records written before they existed
  // (and disks nobody chowned) show the agent's own uid/gid and mode 0660, as the mount always did.
  file?: DiskFileOwner
  xattrs?: Record<string, string> // extended attribute name → value (base64)
  qos?: DiskQos // I/O limits every agent enforces on the disk (absent: unlimited)
}
// Per-disk I/O limits (`ukai disk qos`, src/admin/disk-qos.ts), enforced by the disk engine of
// every agent (src/lib/io-throttle.ts, held by src/vdisk/virtual-disk.ts). Its own format version: an agent that does not know
// it keeps the limits it had (readDiskQos throws) instead of guessing. 0 means unlimited. Burst:
// burstIops / burstBytes when set, else burstSeconds (default 1) of the rate.
export interface DiskQos { v: 1, iops: number, bytesPerSec: number, burstIops?: number, burstBytes?: number, burstSeconds?: number }
export const QOS_IOPS_MAX = 10_000_000
export const QOS_BYTES_PER_SEC_MAX = 1e12 // 1 TB/s: more is a typo
export const QOS_BURST_SECONDS_MAX = 3600
export function readDiskQos (rec: DiskRecord): DiskQos | null {
  const q = rec.qos
  if (q === undefined || q === null) return null
  if (q.v !== 1) throw UkaiError.internal(`qos of disk ${rec.name} in ZooKeeper has format version ${String(q.v)}; this ukai reads version 1`)
  return q
}
// A tenant (src/meta/tenants.ts): its quotas and what its disks use, kept in one znode whose
// version every create, resize, snapshot and delete of its disks checks and bumps in the same
// transaction — the ledger that makes a quota hold under concurrent creates. A quota of null is
// no limit; 0 is a limit of nothing. `sites`: where the tenant's disks may be placed or
// relocated (absent or empty: anywhere).
export interface TenantUsage { capacityBytes: number, disks: number, snapshots: number }
export interface TenantQuota { capacityBytes: number | null, disks: number | null, snapshots: number | null }
// The cluster CA's CRL as `ukai cert revoke` published it. crlNumber repeats the number signed
// inside the PEM for people and for the publisher's order check; nodes believe only the PEM's
// (src/storagenode/crl.ts verifies it), never this field.
export interface CrlRecord { v: 1, crlNumber: number, pem: string, publishedAtMs: number }
export function checkCrlRecord (rec: CrlRecord): CrlRecord {
  if (!Number.isSafeInteger(rec.crlNumber) || rec.crlNumber < 1 || typeof rec.pem !== 'string' || !rec.pem.includes('BEGIN X509 CRL')) throw UkaiError.internal('corrupt CRL record in ZooKeeper: no CRL number or no PEM CRL')
  return rec
}

export interface TenantRecord { v: 1, name: string, createdAtMs: number, quota: TenantQuota, usage: TenantUsage, sites?: string[] }
// Every disk belongs to a tenant; disks created before tenants existed belong to this one, which
// exists without `ukai tenant create` (its ledger is made on first use, counting its disks).
export const DEFAULT_TENANT = 'default'
export interface DiskFileOwner { uid: number, gid: number, mode: number } // mode: permission bits (0o7777)
// Extended attributes live in the disk record: libvirt's are tens of bytes. Limits keep the
// record small (every agent caches it) and answer a large value with E2BIG / ENOSPC.
export const XATTR_VALUE_MAX_BYTES = 4096
export const XATTRS_TOTAL_MAX_BYTES = 16384 // names + values of one disk
// releasedEpoch: the epoch whose holder let the lease go deliberately (LeaseManager.release); a
// lease znode gone without it (an expired session, whose holder may still write and re-assert)
// is not free for acquireIfFree. Absent in records written before it (read: not released).
export interface FenceRecord { v: 1, leaseEpoch: number, releasedEpoch?: number }
export interface LeaseRecord { v: 1, host: string, leaseEpoch: number, sessionId: string, acquiredAtMs: number }
export interface HandoverRequest { v: 1, host: string, requestedAtMs: number }
export interface OpenRecord { v: 1, host: string, writable: boolean }

// Round-trip times measured by an agent (or any host) to each storage node, in milliseconds.
// localReadBytes: the part of readBytes read straight from a same-host node's files (absent from
// older agents). dirtyBlocks: block replicas written and not yet flushed (a gauge); behindFlushes:
// background flushes (flush-behind, src/vdisk/dirty-flush.ts) done (both absent from older agents).
export interface DiskIoCounters { readBytes: number, writeBytes: number, localReadBytes?: number, dirtyBlocks?: number, behindFlushes?: number }
// What a host publishes every few seconds: round trips to each node (ms) and, from an agent,
// cumulative bytes read and written per disk since it started (rates are deltas between reports).
// writeP99Ms: per node, the p99 of the host's acknowledged writes to it since its previous report
// (nodes it did not write to meanwhile are absent; absent altogether from older agents);
// writeIdleP99Ms: for the same nodes, the lowest of those p99s over the last 5 minutes.
// A report older than this is from an agent that went away (reports come every 2 s): the
// controller's start gate (controller/busy-nodes.ts) and the copy pace (relocate/copy-pace.ts) skip it.
export const RTT_REPORT_FRESH_MS = 10_000
export interface RttReport { v: 1, host: string, site: string, measuredAtMs: number, rttMs: Record<string, number>, writeP99Ms?: Record<string, number>, writeIdleP99Ms?: Record<string, number>, io?: Record<string, DiskIoCounters> }

export type RelocationState = 'copying' | 'flipping' | 'done' | 'paused' | 'cancelled'
export interface RelocationRecord {
  v: 1
  id: string
  disk: string
  targetNodes: string[]          // the replica set the disk ends with
  dropNodes: string[]            // replicas removed once every block is in sync on the targets
  addedNodes: string[]           // targets that held none of the disk before: what a cancel removes
  rateBytesPerSec: number        // 0: unlimited
  state: RelocationState
  reason: string                 // why paused/cancelled, '' otherwise
  executor: string               // host running it now ('' when nobody does)
  plan: { blocks: number, writtenBlocks: number, bytes: number }
  progress: { blocks: number, bytes: number, updatedAtMs: number }
  createdAtMs: number
  finishedAtMs: number
  // The disk's placement policy once the relocation is done (a move to a site, or to named
  // nodes), so `disk list` and a later grow follow the move; absent for a repair.
  placement?: PlacementPolicy
  // Present while the copy runs slower than its rate because a node it uses is slow for the
  // guests (relocate/copy-pace.ts): the pace now and why, e.g. "node b1 write p99 38 ms (idle 2 ms)".
  // Saved with the progress (every second at most, and at each change of pace) and kept when the
  // run stops or pauses: a resumed copy starts there, not at its full rate.
  pace?: RelocationPace
}
// topBytesPerSec: what the pace climbs back to when the record has no rate (the fastest the copy
// moved unpaced), so a resumed unlimited copy climbs back as the first run would have.
export interface RelocationPace { bytesPerSec: number, why: string, sinceMs: number, topBytesPerSec?: number }

const RELOCATION_STATES: readonly RelocationState[] = ['copying', 'flipping', 'done', 'paused', 'cancelled']
// A relocation record read back from ZooKeeper is checked field by field before anyone acts on
// it: the controller runs records nobody else looks at, and one damaged by hand (or by a bug)
// must be refused with a reason, not crash the executor (issue 11: "never a crash loop").
// onIgnored: a part left out of what is returned (a damaged pace), and why.
export function checkRelocationRecord (rec: RelocationRecord, disk: string, onIgnored?: (why: string) => void): RelocationRecord {
  const bad = (why: string): never => { throw UkaiError.internal(`corrupt relocation record of disk '${disk}' in ZooKeeper: ${why}`) }
  const isCount = (n: unknown): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
  const isIds = (a: unknown): boolean => Array.isArray(a) && a.every(x => typeof x === 'string' && NAME_RE.test(x))
  if (typeof rec.id !== 'string' || rec.id === '') bad('no id')
  if (rec.disk !== disk) bad(`it names disk '${String(rec.disk)}'`)
  if (!isIds(rec.targetNodes) || rec.targetNodes.length === 0 || rec.targetNodes.length > REPLICAS_MAX) bad('targetNodes is not a list of 1-8 node ids')
  if (!isIds(rec.dropNodes)) bad('dropNodes is not a list of node ids')
  if (!isIds(rec.addedNodes)) bad('addedNodes is not a list of node ids')
  if (!RELOCATION_STATES.includes(rec.state)) bad(`unknown state '${String(rec.state)}'`)
  if (!isCount(rec.rateBytesPerSec)) bad('rateBytesPerSec is not a count')
  if (typeof rec.reason !== 'string' || typeof rec.executor !== 'string') bad('reason or executor is not a string')
  if (typeof rec.plan !== 'object' || rec.plan === null || !isCount(rec.plan.blocks) || !isCount(rec.plan.writtenBlocks) || !isCount(rec.plan.bytes)) bad('plan is not { blocks, writtenBlocks, bytes }')
  if (typeof rec.progress !== 'object' || rec.progress === null || !isCount(rec.progress.blocks) || !isCount(rec.progress.bytes) || !isCount(rec.progress.updatedAtMs)) bad('progress is not { blocks, bytes, updatedAtMs }')
  if (!isCount(rec.createdAtMs) || !isCount(rec.finishedAtMs)) bad('createdAtMs or finishedAtMs is not a time')
  // The pace is a hint (where a resumed copy starts: relocate/copy-pace.ts), not part of the plan:
  // a damaged one is dropped, and the copy starts at its rate, rather than refusing the record.
  const p = rec.pace
  if (p !== undefined && (typeof p !== 'object' || p === null || !isCount(p.bytesPerSec) || typeof p.why !== 'string' || !isCount(p.sinceMs) || (p.topBytesPerSec !== undefined && !isCount(p.topBytesPerSec)))) {
    onIgnored?.(`pace ${JSON.stringify(p)?.slice(0, 120) ?? String(p)} is not { bytesPerSec, why, sinceMs[, topBytesPerSec] }`)
    const { pace, ...rest } = rec
    return rest
  }
  return rec
}

// A controller candidate (src/controller): an agent (`ukai mount`) or a standalone daemon.
export type ControllerKind = 'agent' | 'daemon'
export interface ControllerCandidate { v: 1, host: string, kind: ControllerKind, pid: number, startedAtMs: number }
// What one duty of the leader is doing, as the leader last reported it.
export interface ControllerDutyStatus { name: string, state: string, detail?: Record<string, unknown> }
// The leader's own record: who leads since when, and its duties (updated every few seconds).
export interface ControllerLeader extends ControllerCandidate { leaderSinceMs: number, updatedAtMs: number, duties: ControllerDutyStatus[] }

// A committed snapshot: the disk's state at `epoch` (per block, the newest version with epoch
// <= `epoch`). Versions at or below it are never written again.
export interface SnapshotRecord {
  v: 1
  disk: string
  name: string
  epoch: number
  sizeBytes: number
  blockSizeBytes: number
  createdAtMs: number
  // Where the content was first committed, when that was another disk (an imported export
  // stream): lets an incremental stream check its base across clusters. Absent: this disk, `epoch`.
  origin?: { diskUuid: string, epoch: number }
}
// Asks the disk's lease holder to commit a snapshot; it answers by creating the SnapshotRecord
// and removing the request in one transaction, or by setting `error` (nothing committed).
// error/errorCode: the holder's refusal, its UkaiError code carried so the requester reports the same code (QUOTA_EXCEEDED …).
export interface SnapshotRequest { v: 1, snapshot: string, host: string, requestedAtMs: number, error?: string, errorCode?: UkaiErrorCode }

// What `ukai scrub` found on the disk (src/admin/scrub-admin.ts): the last run and totals.
export interface ScrubRecord {
  v: 1
  lastScrubMs: number
  deep: boolean
  versionsChecked: number
  bytesChecked: number
  mismatches: number         // replicas found bad in the last run
  markedStale: number        // of those, marked stale for repair
  unrepairable: number       // blocks with no replica known good
  diverged: number           // --deep: blocks whose replicas disagree with no majority
  runs: number
  mismatchesTotal: number
  markedStaleTotal: number
}

export function encodeJson<T extends { v: number }> (value: T): Buffer {
  return Buffer.from(JSON.stringify(value))
}

export function decodeJson<T extends { v: number }> (data: Buffer, what: string): T {
  let value: any
  try {
    value = JSON.parse(data.toString('utf8'))
  } catch {
    throw UkaiError.internal(`corrupt ${what} in ZooKeeper: not JSON`)
  }
  if (value?.v !== 1) throw UkaiError.internal(`${what} in ZooKeeper has format version ${String(value?.v)}; this ukai reads version 1`)
  return value as T
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
// Disk names become file names on the mount and path components in ZooKeeper.
export function validateDiskName (name: string): void {
  if (!NAME_RE.test(name)) {
    throw UkaiError.badArgument(`bad disk name '${name}': use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`)
  }
}
export function validateSnapshotName (name: string): void {
  if (!NAME_RE.test(name)) {
    throw UkaiError.badArgument(`bad snapshot name '${name}': use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`)
  }
}
export interface SnapshotRef { disk: string, snapshot: string }
// 'DISK@NAME' -> { disk, snapshot }, both validated.
export function parseSnapshotRef (ref: string): SnapshotRef {
  const at = ref.indexOf('@')
  if (at < 0 || ref.indexOf('@', at + 1) >= 0) throw UkaiError.badArgument(`bad snapshot reference '${ref}': expected DISK@SNAPSHOT`)
  const disk = ref.slice(0, at)
  const snapshot = ref.slice(at + 1)
  validateDiskName(disk)
  validateSnapshotName(snapshot)
  return { disk, snapshot }
}
export function formatSnapshotRef (ref: SnapshotRef): string { return `${ref.disk}@${ref.snapshot}` }
export function validateId (id: string, what: string): void {
  if (!NAME_RE.test(id)) throw UkaiError.badArgument(`bad ${what} '${id}': use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`)
}
