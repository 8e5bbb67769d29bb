// `ukai dev demo` (the README's `npm run demo`) runs end to end and every check it prints holds:
// the bytes written on site A read back on site B, a relocation to site B completes and makes
// site B's reads local, the snapshot's export equals the data, writes go on after a node dies;
// a tenant works within its quota and only on its own disks.
import t from 'tap'
import { devDown } from '../src/dev/cluster'
import { fuseUnavailable, makeTempDir } from './helpers/cluster'
import { runCli } from './helpers/cli'

t.test('ukai dev demo', { skip: fuseUnavailable() ?? false }, async (t) => {
  const dir = makeTempDir(t, 'demo')
  t.teardown(async () => { await devDown({ dir }) })
  const res = await runCli(['dev', 'demo', '--dir', dir], { timeoutMs: 240_000 })
  t.equal(res.code, 0, res.code === 0 ? 'the demo exits 0' : res.stderr)
  const out = res.stdout
  t.match(out, /reads the same bytes: sha256 [0-9a-f]+ = what site A wrote/)
  t.match(out, /relocation of vm-\S+: done/)
  t.match(out, /secure by default: every storage-node channel is mutual TLS/, 'the demo says TLS and ACLs are on')
  t.match(out, /controller leader: hv-[ab] \(agent, pid \d+\)/, 'and which agent leads the controller')
  t.match(out, /blocks per site\s+site-b: 256/, 'after the relocation every block is at site B')
  const m = /now takes ([\d.]+) ms \(was ([\d.]+) ms\); the bytes: unchanged/.exec(out)
  t.ok(m !== null, 'site B reads the same bytes after the move')
  if (m !== null) t.ok(Number(m[1]) < Number(m[2]) / 3, `site B's reads got faster: ${m[2]} → ${m[1]} ms`)
  t.match(out, /lease holder now hv-b/)
  t.match(out, /the first 64\.0 MiB equal the bytes written on site A/, 'the snapshot export holds the data')
  t.match(out, /site A reads the new bytes: yes/)
  t.match(out, /storage node a1 at site-a .* metrics http:\/\/127\.0\.0\.1:\d+\/metrics/, 'the endpoints are printed')
  t.match(out, /ukai_disk_write_bytes_total\{disk="vm-[^"]+",host="hv-b"\} [1-9]/, 'the demo shows site B\'s disk metrics')
  t.match(out, /ukai_disk_write_latency_seconds_count\{disk="vm-[^"]+",host="hv-b"\} [1-9]/)
  t.match(out, /ukai disk create homework --size 1G\n/, 'a tenant creates a disk through the tenant API')
  t.match(out, /refused \(exit 1\): .*would exceed its capacity quota of 2\.00 GiB/, 'a create past the quota is refused, naming it')
  t.match(out, /refused \(exit 1\): .*vm-\S+/, "the admin's disk is not the tenant's")
  t.match(out, /class-\w+\s.*1\.00 GiB \/ 2\.00 GiB/, 'tenant list shows what the tenant provisioned')
  t.notMatch(out, /DIFFER|\bNO\b|UNEXPECTED/, 'no check failed')
})
