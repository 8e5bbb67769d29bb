// `ukai` under the V8 CPU profiler, for benchmarks: the same CLI (dist/src/cli/main.js), with a
// profile of the whole process life written to $UKAI_BENCH_CPU_PROFILE_DIR/<pid>.cpuprofile as it
// exits. src/dev spawns daemons without NODE_OPTIONS, so `--cpu-prof` cannot be passed that way;
// pointing UKAI_CLI_MAIN at this file (see ukai-cluster.ts) starts the profiler in-process instead.
import fs from 'node:fs'
import inspector from 'node:inspector'
import Module from 'node:module'
import path from 'node:path'

const outDir = process.env.UKAI_BENCH_CPU_PROFILE_DIR ?? process.cwd()
const session = new inspector.Session()
session.connect()
session.post('Profiler.enable')
session.post('Profiler.start')

// 'exit' handlers run synchronously; a same-thread inspector session answers synchronously too.
process.on('exit', () => {
  session.post('Profiler.stop', (err, res) => {
    if (err !== null) return
    fs.mkdirSync(outDir, { recursive: true })
    fs.writeFileSync(path.join(outDir, `${process.pid}.cpuprofile`), JSON.stringify(res.profile))
  })
})

// Run the real CLI as the main module (it only starts when require.main is itself).
process.argv[1] = path.join(__dirname, '..', 'src', 'cli', 'main.js')
;(Module as unknown as { runMain: () => void }).runMain()
