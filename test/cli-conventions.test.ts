// Issue 14 part 5: the CLI's conventions, as a script or an operator meets them — the version,
// `-o json|table` beside `--json` with errors as JSON under it, ls/rm aliases, required options
// marked and the global options shown in every verb's help, rates shown in the unit --rate takes.
import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { startNode, startZk } from './helpers/cluster'
import { runCli } from './helpers/cli'
import { formatRate } from '../src/units'

const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }

t.test('--version, help text', async (t) => {
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag])
    t.same([r.code, r.stdout.trim()], [0, pkg.version], `${flag} prints package.json's version`)
  }
  const help = await runCli(['disk', 'create', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /--size <size>\s+\(required\) disk size/, 'a required option says so')
  t.match(help.stdout, /Global Options:[\s\S]*--zk <connect>[\s\S]*-o, --output <format>/, 'the global options are in the verb\'s help')
  t.match((await runCli(['--help'])).stdout, /Sizes are binary: .*G = GiB.*Rates are decimal MB\/s/s, 'units are documented')
  t.equal(formatRate(50e6), '50.0 MB/s', 'a rate shows in the unit --rate takes: --rate 50 shows as 50.0 MB/s')
})

t.test('-o json, errors as JSON, aliases', async (t) => {
  const zk = await startZk(t)
  const zks = zk.connectString
  await startNode(t, { zk, id: 'n1', site: 's' })

  const created = await runCli(['-o', 'json', 'disk', 'create', 'd1', '--size', '8M', '--replicas', '1', '--site', 's'], { zk: zks })
  t.equal(created.code, 0, `-o json disk create${created.code !== 0 ? `: ${created.stderr}` : ''}`)
  t.equal((JSON.parse(created.stdout) as { name: string }).name, 'd1', '-o json prints what --json prints')
  const viaFlag = await runCli(['disk', 'ls', '--json'], { zk: zks })
  const viaOutput = await runCli(['--output', 'json', 'disk', 'list'], { zk: zks })
  t.equal(viaOutput.stdout, viaFlag.stdout, '--output json = --json; ls = list')
  t.match((await runCli(['-o', 'table', 'disk', 'ls'], { zk: zks })).stdout, /NAME\s.*STATE\s.*\n.*d1\s.*healthy/, '-o table is the table')
  t.match((await runCli(['node', 'ls'], { zk: zks })).stdout, /n1/, 'node ls')
  t.match((await runCli(['site', 'ls'], { zk: zks })).stdout, /\bs\b/, 'site ls')

  for (const args of [['-o', 'json', 'disk', 'info', 'nope'], ['disk', 'info', 'nope', '--json']]) {
    const r = await runCli(args, { zk: zks })
    t.equal(r.code, 1, `${args.join(' ')}: exit 1`)
    t.equal(r.stdout, '', 'nothing on stdout')
    t.same(JSON.parse(r.stderr), { error: { code: 'NOT_FOUND', message: "unknown disk 'nope'", exitStatus: 1 } }, 'the error as one JSON object on stderr')
  }
  const bad = await runCli(['-o', 'yaml', 'disk', 'list'], { zk: zks })
  t.equal(bad.code, 2, 'an unknown format is a usage error')
  t.match(bad.stderr, /argument 'yaml' is invalid. Allowed choices are json, table/)
  const noJson = await runCli(['-o', 'json', 'dev', 'down', '--dir', '/nonexistent'], { zk: zks })
  t.same([noJson.code, (JSON.parse(noJson.stderr) as { error: { message: string } }).error.message], [2, "'down' has no JSON output (-o json)"], 'a verb without JSON output says so')

  const rm = await runCli(['disk', 'rm', 'd1'], { zk: zks })
  t.equal(rm.code, 0, `disk rm${rm.code !== 0 ? `: ${rm.stderr}` : ''}`)
  t.same(JSON.parse((await runCli(['disk', 'list', '--json'], { zk: zks })).stdout), [], 'rm = delete')
})
