#!/usr/bin/env node
// A stand-in for dist/src/cli/main.js that honours the daemon contract of src/dev/processes.ts,
// so the dev tooling can be tested before (and independently of) the real daemons:
//   fake-cli.js storagenode --id ID --site SITE --data-dir DIR --listen HOST:PORT --zk CONNECT
//       listens on HOST:PORT, logs {"msg":"ready","address":"HOST:PORT"}, exits 0 on SIGTERM
//   fake-cli.js mount MOUNTPOINT --host NAME --site SITE --zk CONNECT
//       mounts an empty read-only FUSE file system there (fuse-native), logs {"msg":"ready"},
//       unmounts and exits 0 on SIGTERM
// FAKE_CLI_FAIL=1 makes it log an error and exit 3 instead of becoming ready.
// FAKE_CLI_IGNORE_TERM=1 makes it ignore SIGTERM (to test the SIGKILL deadline).
'use strict'
const net = require('node:net')
const fs = require('node:fs')

const [cmd, ...rest] = process.argv.slice(2)
const log = (obj) => process.stdout.write(JSON.stringify({ level: 30, time: Date.now(), pid: process.pid, name: `fake-${cmd}`, ...obj }) + '\n')
const opt = (name) => { const i = rest.indexOf(`--${name}`); return i >= 0 ? rest[i + 1] : undefined }

if (rest.includes('--help')) {
  if (cmd === 'storagenode' || cmd === 'mount') { process.stdout.write(`usage: fake ${cmd}\n`); process.exit(0) }
  process.stderr.write(`error: unknown command '${cmd}'\n`); process.exit(1)
}
if (process.env.FAKE_CLI_FAIL === '1') {
  log({ level: 50, msg: 'failing on purpose (FAKE_CLI_FAIL=1)' })
  process.exit(3)
}
const onTerm = (fn) => {
  if (process.env.FAKE_CLI_IGNORE_TERM === '1') { process.on('SIGTERM', () => log({ msg: 'ignoring SIGTERM' })); return }
  process.once('SIGTERM', fn)
}

if (cmd === 'storagenode') {
  const dataDir = opt('data-dir')
  if (!dataDir || !fs.existsSync(dataDir)) { log({ level: 50, msg: `no data dir ${dataDir}` }); process.exit(2) }
  const [host, port] = (opt('listen') || '127.0.0.1:0').split(':')
  const srv = net.createServer((s) => s.end())
  srv.listen({ host, port: Number(port) }, () => {
    log({ msg: 'ready', id: opt('id'), site: opt('site'), address: `${host}:${srv.address().port}` })
  })
  onTerm(() => { log({ msg: 'stopping' }); srv.close(() => process.exit(0)) })
} else if (cmd === 'mount') {
  const Fuse = require('fuse-native')
  const mnt = rest[0]
  const ops = {
    getattr: (p, cb) => p === '/'
      ? cb(0, { mtime: new Date(), atime: new Date(), ctime: new Date(), size: 4096, mode: 0o40755, uid: 0, gid: 0, nlink: 2 })
      : cb(Fuse.ENOENT),
    readdir: (p, cb) => p === '/' ? cb(0, []) : cb(Fuse.ENOENT)
  }
  const fuse = new Fuse(mnt, ops, { force: true, mkdir: true })
  fuse.mount((err) => {
    if (err) { log({ level: 50, msg: `mount failed: ${err.message}` }); process.exit(2) }
    log({ msg: 'ready', host: opt('host'), site: opt('site'), mountPoint: mnt })
  })
  onTerm(() => { log({ msg: 'stopping' }); fuse.unmount(() => process.exit(0)) })
} else {
  process.stderr.write(`error: unknown command '${cmd}'\n`)
  process.exit(1)
}
