// `ukai dev demo` (what `npm run demo` runs): a two-site cluster and a short tour of what UKAI
// does — a disk created with qemu-img on site A's mount, written there, read on site B's mount,
// the write lease moving to site B, and a storage node killed under a writer.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { MetaStore } from '../meta/store'
import { formatBytes } from '../units'
import { summarizeDisk } from '../vdisk/disk-summary'
import { ClusterInfo, devDown, devUp, readCluster } from './cluster'
import { signalIfOurs } from './pids'

const MiB = 1024 * 1024

function say (text: string): void { process.stdout.write(`\n== ${text}\n`) }
function show (text: string): void { process.stdout.write(`   ${text}\n`) }
function sha (data: Buffer): string { return createHash('sha256').update(data).digest('hex').slice(0, 16) }

export async function runDemo (dir: string): Promise<void> {
  // A previous demo killed one of its nodes: start from a fresh cluster every time.
  if (readCluster(dir) !== null) {
    say(`stopping the previous dev cluster in ${dir}`)
    await devDown({ dir })
  }
  say(`starting a local cluster in ${dir}: ZooKeeper, 2 sites × 2 storage nodes, one mount agent per site`)
  const info: ClusterInfo = await devUp({ dir, sites: 2, nodesPerSite: 2, detach: true })
  for (const n of info.nodes) show(`storage node ${n.id} at ${n.site}  ${n.address}  (pid ${n.pid})`)
  for (const a of info.agents) show(`agent ${a.host} at ${a.site}  mounted on ${a.mountPoint}  (pid ${a.pid})`)

  const [a, b] = info.agents
  const meta = await MetaStore.connect(info.zk.connectString)
  try {
    const name = `demo-${Date.now().toString(36)}`
    const fileA = path.join(a.mountPoint, name)
    const fileB = path.join(b.mountPoint, name)
    say(`qemu-img create -f raw ${fileA} 1G   (a thin disk placed at ${a.site})`)
    execFileSync('qemu-img', ['create', '-f', 'raw', fileA, '1G'], { stdio: 'inherit' })

    say('write 64 MiB of data on site A, read it back on site B')
    const data = Buffer.alloc(64 * MiB)
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i ^ 0x5a5a5a5a, i)
    let t0 = Date.now()
    const fd = fs.openSync(fileA, 'r+')
    fs.writeSync(fd, data, 0, data.length, 0)
    fs.fsyncSync(fd)
    show(`wrote ${formatBytes(data.length)} in ${Date.now() - t0} ms on ${a.host}`)
    t0 = Date.now()
    const readB = Buffer.alloc(data.length)
    const fdB = fs.openSync(fileB, 'r+')
    fs.readSync(fdB, readB, 0, readB.length, 0)
    show(`read it on ${b.host} in ${Date.now() - t0} ms: sha256 ${sha(readB)} ${readB.equals(data) ? '= the data written on site A' : 'DIFFERS'}`)
    let s = await summarizeDisk(meta, name)
    show(`ukai disk info ${name}: ${s.blocks} blocks of ${formatBytes(s.blockSizeBytes)}, per site ${JSON.stringify(s.blocksPerSite)}, lease holder ${s.leaseHolder} (epoch ${s.leaseEpoch})`)

    say(`write on site B while A still has the disk open: the lease moves to ${b.host}`)
    t0 = Date.now()
    fs.writeSync(fdB, Buffer.alloc(4096, 0xbb), 0, 4096, 0)
    s = await summarizeDisk(meta, name)
    show(`hand-over took ${Date.now() - t0} ms; lease holder now ${s.leaseHolder} (epoch ${s.leaseEpoch}); site A's old epoch is refused by every node`)

    const victim = info.nodes.find(n => s.replicasPerNode[n.id] !== undefined)
    if (victim !== undefined) {
      say(`kill -9 storage node ${victim.id} (pid ${victim.pid}) and keep writing on site B`)
      signalIfOurs(victim.pid, victim.argv, 'SIGKILL')
      fs.writeSync(fdB, Buffer.alloc(8 * MiB, 0xcc), 0, 8 * MiB, 16 * MiB)
      fs.fsyncSync(fdB)
      s = await summarizeDisk(meta, name)
      show(`writes went on; ${s.staleBlocks} block(s) now have a stale replica on ${victim.id}, which reads will never pick`)
      const check = Buffer.alloc(8 * MiB)
      fs.readSync(fd, check, 0, check.length, 16 * MiB)
      show(`site A reads the new bytes: ${check.every(x => x === 0xcc) ? 'yes' : 'NO'}`)
      show(`(restart it with: node dist/src/cli/main.js storagenode --id ${victim.id} --site ${victim.site} --data-dir ${victim.dataDir} --listen ${victim.address} --zk ${info.zk.connectString})`)
    }
    fs.closeSync(fd)
    fs.closeSync(fdB)
  } finally {
    meta.close()
  }
  say('the cluster keeps running; try:')
  show(`export UKAI_ZK=${info.zk.connectString}`)
  show('node dist/src/cli/main.js disk list            # or: npx ukai disk list')
  show('node dist/src/cli/main.js node list')
  show(`ls -l ${a.mountPoint} ${b.mountPoint}`)
  show(`node dist/src/cli/main.js dev down --dir ${dir}   # stop everything and unmount`)
}
