// `ukai config show | get KEY | set KEY VALUE`: the cluster settings kept in /ukai/config. Only
// what an operator may tune is settable; every value is checked before anything changes.
import { UkaiError } from '../errors'
import {
  COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT, COPY_PACE_FLOOR_BYTES_PER_SEC_MAX, COPY_PACE_FLOOR_BYTES_PER_SEC_MIN, COPY_PACE_RISE_MS_DEFAULT,
  COPY_PACE_RISE_MS_MAX, ClusterConfig, DEFAULT_CONFIG, DOWN_OUT_MS_MAX
} from '../meta/schema'
import { parseSize } from '../units'
import { downOutMsOf } from '../meta/node-state'
import { MetaStore } from '../meta/store'

interface Setting {
  describe: string
  read: (c: ClusterConfig) => number
  // Absent: shown, not settable (a change would not apply to what exists).
  write?: (c: ClusterConfig, raw: string) => ClusterConfig
}

const SETTINGS: Record<string, Setting> = {
  'down-out-ms': {
    describe: 'how long a storage node may be down before it is marked out and its replicas are made again elsewhere',
    read: downOutMsOf,
    write: (c, raw) => ({ ...c, downOutMs: parseDownOutMs(raw) })
  },
  // relocate/copy-pace.ts: how a running copy (repair, relocation) yields to the guests.
  'copy-pace-rise-ms': {
    describe: 'a running copy halves its rate while a node it uses shows the guests\' write p99 this many ms above its idle value (and at least twice it); 0: never slowed',
    read: c => c.copyPaceRiseMs ?? COPY_PACE_RISE_MS_DEFAULT,
    write: (c, raw) => ({ ...c, copyPaceRiseMs: parseCopyPaceRiseMs(raw) })
  },
  'copy-pace-floor-bytes-per-sec': {
    describe: 'the slowest a slowed copy goes (bytes/s, e.g. 4M), so that it always finishes',
    read: c => c.copyPaceFloorBytesPerSec ?? COPY_PACE_FLOOR_BYTES_PER_SEC_DEFAULT,
    write: (c, raw) => ({ ...c, copyPaceFloorBytesPerSec: parseCopyPaceFloor(raw) })
  },
  'default-replicas': { describe: 'replica count of a new disk without --replicas', read: c => c.defaultReplicas },
  'default-block-size-bytes': { describe: 'block size of a new disk without --block-size', read: c => c.defaultBlockSizeBytes },
  'segment-blocks': { describe: 'blocks per placement-map segment of a new disk', read: c => c.segmentBlocks }
}

export function parseDownOutMs (raw: string): number {
  const what = `bad down-out-ms '${raw}'`
  if (!/^-?\d+(\.\d+)?$/.test(raw.trim())) throw UkaiError.badArgument(`${what}: expected a whole number of milliseconds, e.g. 600000 for 10 minutes`)
  const ms = Number(raw)
  if (!Number.isInteger(ms)) throw UkaiError.badArgument(`${what}: expected a whole number of milliseconds`)
  if (ms <= 0) throw UkaiError.badArgument(`${what}: must be above 0 (a node would be out at its first hiccup)`)
  if (ms > DOWN_OUT_MS_MAX) throw UkaiError.badArgument(`${what}: at most ${DOWN_OUT_MS_MAX} (7 days); disks would stay at one copy that long`)
  return ms
}

export function parseCopyPaceRiseMs (raw: string): number {
  const what = `bad copy-pace-rise-ms '${raw}'`
  if (!/^\d+$/.test(raw.trim())) throw UkaiError.badArgument(`${what}: expected a whole number of milliseconds (0 turns the pacing off), e.g. 10`)
  const ms = Number(raw)
  if (ms > COPY_PACE_RISE_MS_MAX) throw UkaiError.badArgument(`${what}: at most ${COPY_PACE_RISE_MS_MAX} (10 s); a guest waiting that long is an outage, not a rise (0 turns the pacing off)`)
  return ms
}

export function parseCopyPaceFloor (raw: string): number {
  const what = 'copy-pace-floor-bytes-per-sec'
  const bytes = parseSize(raw, what)
  if (bytes < COPY_PACE_FLOOR_BYTES_PER_SEC_MIN) throw UkaiError.badArgument(`bad ${what} '${raw}': at least ${COPY_PACE_FLOOR_BYTES_PER_SEC_MIN} (64K); a slowed copy must still finish`)
  if (bytes > COPY_PACE_FLOOR_BYTES_PER_SEC_MAX) throw UkaiError.badArgument(`bad ${what} '${raw}': at most ${COPY_PACE_FLOOR_BYTES_PER_SEC_MAX} (10G); a larger floor never slows anything`)
  return bytes
}

function settingOf (key: string): Setting {
  const s = SETTINGS[key]
  if (s === undefined) throw UkaiError.badArgument(`unknown setting '${key}': one of ${Object.keys(SETTINGS).join(', ')}`)
  return s
}

export interface SettingView { key: string, value: number, settable: boolean, describe: string }

export async function showConfig (meta: MetaStore): Promise<SettingView[]> {
  const c = await meta.config()
  return Object.entries(SETTINGS).map(([key, s]) => ({ key, value: s.read(c), settable: s.write !== undefined, describe: s.describe }))
}

export async function getConfigValue (meta: MetaStore, key: string): Promise<number> {
  const s = settingOf(key)
  return s.read(await meta.config())
}

// The key and value checked without ZooKeeper (the CLI refuses a bad command line before it connects).
export function checkSetting (key: string, raw: string): void {
  const s = settingOf(key)
  if (s.write === undefined) throw UkaiError.badArgument(`setting '${key}' cannot be changed (it applies when a disk is created: pass it to 'ukai disk create')`)
  s.write(DEFAULT_CONFIG, raw)
}

// Checked first, then written conditionally on the version read.
export async function setConfigValue (meta: MetaStore, key: string, raw: string): Promise<number> {
  const s = settingOf(key)
  if (s.write === undefined) throw UkaiError.badArgument(`setting '${key}' cannot be changed (it applies when a disk is created: pass it to 'ukai disk create')`)
  const write = s.write
  const { config, version } = await meta.configWithVersion()
  const next = write(config, raw)
  await meta.setConfig(next, version)
  return s.read(next)
}
