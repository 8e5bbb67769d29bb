// Where TLS CPU goes (issue 12: "say where it goes"): the transport alone, without UKAI, so that
// the numbers of the fio jobs with TLS on and off (bench/run.ts, targets ukai / ukai-insecure) can
// be split into cipher, TLS record layer and HTTP/2.
//
//   node dist/bench/tls-cost.js      (~1 minute)
//
// For each case, TLS_COST_MIB of 1 MiB writes from a client to a server in this process over
// loopback; CPU (user + system) of the process per MiB, both ends together:
//   tcp / tls-<suite>        a plain socket vs a TLS 1.3 socket with each cipher suite
//   h2-tcp / h2-tls @frame   Node's HTTP/2 (what grpc-js uses; 16 MiB windows as UKAI sets them)
//                            over each, with 16 KiB (the default) and 256 KiB DATA frames
// Measured 2026-12-07 on the shared 2-core machine (load average 35-47, so ±15 %; AES-NI present):
//   tcp 0.79-0.83 ms/MiB; tls AES-256-GCM 1.76-1.89, AES-128-GCM 1.73-1.82, ChaCha20 1.87;
//   h2-tcp 1.06-1.47, h2-tls 1.81-2.18; 256 KiB frames: no gain on either.
// `openssl speed -evp` (one core, 16 KiB): AES-128-GCM 4.2 GB/s, AES-256-GCM 4.3, ChaCha20 4.4:
// the cipher is ~0.25 ms per MiB per end, about half of what TLS adds; the rest is Node's TLS
// stream (clear text into OpenSSL, records out, one more buffer each way). Hence UKAI keeps
// Node's defaults (TLS 1.3, AES-256-GCM first): no suite or frame size buys anything here.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import http2 from 'node:http2'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { envNumber } from './bench-env'

const MIB = 1024 * 1024
const TOTAL_MIB = envNumber('TLS_COST_MIB', 256)
const WINDOW_BYTES = 16 * MIB
const SUITES = ['TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256']

interface Case { name: string, mibPerSec: number, cpuMsPerMib: number }

function keyPair (dir: string): { key: Buffer, cert: Buffer } {
  const key = path.join(dir, 'k.pem')
  const cert = path.join(dir, 'c.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=tls-cost', '-days', '1'], { stdio: 'ignore' })
  return { key: fs.readFileSync(key), cert: fs.readFileSync(cert) }
}

function measure (name: string, run: (done: () => void) => void): Promise<Case> {
  return new Promise((resolve) => {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    run(() => {
      const u = process.cpuUsage(cpu0)
      resolve({ name, mibPerSec: TOTAL_MIB / ((performance.now() - t0) / 1000), cpuMsPerMib: (u.user + u.system) / 1000 / TOTAL_MIB })
    })
  })
}

// Writes TOTAL_MIB of 1 MiB buffers with back-pressure, then ends.
function pump (w: NodeJS.WritableStream & { once: (e: 'drain', f: () => void) => unknown }): void {
  const buf = Buffer.alloc(MIB, 7)
  let i = 0
  const go = (): void => {
    while (i < TOTAL_MIB) { i++; if (!w.write(buf)) { w.once('drain', go); return } }
    w.end()
  }
  go()
}

async function socketCase (suite: string | null, pair: { key: Buffer, cert: Buffer }): Promise<Case> {
  let got = 0
  const onConn = (s: net.Socket): void => { s.on('data', (d: Buffer) => { got += d.length; if (got >= TOTAL_MIB * MIB) s.end() }) }
  const server = suite === null ? net.createServer(onConn) : tls.createServer({ ...pair, ciphers: suite }, onConn)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  try {
    return await measure(suite === null ? 'tcp' : `tls ${suite}`, (done) => {
      const c = suite === null ? net.connect(port, '127.0.0.1') : tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ciphers: suite })
      c.on(suite === null ? 'connect' : 'secureConnect', () => pump(c))
      c.on('end', () => { c.destroy(); done() })
      c.resume()
    })
  } finally {
    server.close()
  }
}

async function h2Case (secure: boolean, frameBytes: number, pair: { key: Buffer, cert: Buffer }): Promise<Case> {
  const settings = { initialWindowSize: WINDOW_BYTES, maxFrameSize: frameBytes }
  const server = secure ? http2.createSecureServer({ ...pair, settings }) : http2.createServer({ settings })
  server.on('session', (s) => { s.once('remoteSettings', () => { s.setLocalWindowSize(WINDOW_BYTES) }) })
  server.on('stream', (st) => { st.resume(); st.on('end', () => { st.respond({ ':status': 200 }); st.end() }) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  const session = http2.connect(`${secure ? 'https' : 'http'}://127.0.0.1:${port}`, { rejectUnauthorized: false, settings })
  await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()))
  session.setLocalWindowSize(WINDOW_BYTES)
  try {
    return await measure(`h2-${secure ? 'tls' : 'tcp'} ${frameBytes / 1024} KiB frames`, (done) => {
      const st = session.request({ ':method': 'POST', ':path': '/' })
      st.resume()
      st.on('end', done)
      pump(st)
    })
  } finally {
    session.close()
    server.close()
  }
}

async function main (): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-tls-cost-'))
  try {
    const pair = keyPair(dir)
    const cases: Case[] = []
    for (const suite of [null, ...SUITES]) cases.push(await socketCase(suite, pair))
    for (const secure of [false, true]) for (const frame of [16 * 1024, 256 * 1024]) cases.push(await h2Case(secure, frame, pair))
    for (const c of cases) process.stdout.write(`${c.name.padEnd(36)} ${c.cpuMsPerMib.toFixed(2).padStart(6)} ms CPU per MiB (both ends) ${c.mibPerSec.toFixed(0).padStart(6)} MiB/s\n`)
    process.stdout.write(`${TOTAL_MIB} MiB per case; load average ${os.loadavg().map(l => l.toFixed(1)).join(' ')} on ${os.cpus().length} CPUs\n`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

main().catch((err) => {
  process.stderr.write(`tls-cost failed: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
