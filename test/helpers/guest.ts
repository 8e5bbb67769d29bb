// A tiny guest for QEMU tests: Debian's kernel plus a busybox initramfs whose init writes and
// verifies its virtio disk without end, printing one line per round on the serial console:
//
//   UKAI-GUEST boot slots=N
//   UKAI-GUEST ok seq=K fails=F        one per round: record K written to slot K mod N with
//                                      O_DIRECT, read back and compared; from K ≥ N on an older
//                                      slot is re-read and compared with the record it must hold
//   UKAI-GUEST FAIL …                  a write failed or a read did not match (exact: every
//                                      record is "UKAI seq=… slot=…" padded to 4 KiB with zeros)
//
// The guest's state (K) is in its memory, so it migrates with the VM and the destination goes on
// verifying what the source wrote. Nothing of the guest is installed on the host: the kernel
// package is fetched with `apt-get download` and unpacked with `dpkg-deb -x`; busybox comes from
// Debian's busybox-static. Built artifacts are cached in .cache/guest/ (gitignored), so only the
// first run pays (~10 s).
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { repoRoot } from '../../src/dev/processes'

export const GUEST_CACHE_DIR = path.join(repoRoot(), '.cache', 'guest')
const BUSYBOX = '/bin/busybox'
// The virtio stack the guest needs to see its disk; dependencies are read from each module.
const WANTED_MODULES = ['virtio_pci', 'virtio_blk']

export const GUEST_RECORD_BYTES = 4096

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules.load); do insmod /lib/modules/$m.ko || echo "UKAI-GUEST insmod $m failed"; done
slots=256
for a in $(cat /proc/cmdline); do case $a in ukai.slots=*) slots=\${a#ukai.slots=} ;; esac; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ ! -b /dev/vda ]; then echo "UKAI-GUEST FAIL no /dev/vda"; poweroff -f; fi
rec () { printf 'UKAI seq=%010d slot=%06d\\n' $1 $2 > /tmp/r; dd if=/tmp/r of=$3 bs=${GUEST_RECORD_BYTES} count=1 conv=sync 2>/dev/null; }
echo "UKAI-GUEST boot slots=$slots"
k=0
fails=0
while :; do
  s=$((k % slots))
  rec $k $s /tmp/exp
  if ! dd if=/tmp/exp of=/dev/vda bs=${GUEST_RECORD_BYTES} seek=$s count=1 oflag=direct conv=notrunc 2>/tmp/err; then
    fails=$((fails+1)); echo "UKAI-GUEST FAIL write seq=$k slot=$s: $(cat /tmp/err)"
  fi
  dd if=/dev/vda of=/tmp/got bs=${GUEST_RECORD_BYTES} skip=$s count=1 iflag=direct 2>/dev/null
  if ! cmp -s /tmp/exp /tmp/got; then
    fails=$((fails+1)); echo "UKAI-GUEST FAIL verify seq=$k slot=$s got=$(head -c 34 /tmp/got)"
  fi
  if [ $k -ge $slots ]; then
    j=$(( (k * 7 + 3) % slots ))
    e=$(( k - (k - j) % slots ))
    rec $e $j /tmp/exp2
    dd if=/dev/vda of=/tmp/got2 bs=${GUEST_RECORD_BYTES} skip=$j count=1 iflag=direct 2>/dev/null
    if ! cmp -s /tmp/exp2 /tmp/got2; then
      fails=$((fails+1)); echo "UKAI-GUEST FAIL verify-old seq=$e slot=$j got=$(head -c 34 /tmp/got2)"
    fi
  fi
  echo "UKAI-GUEST ok seq=$k fails=$fails"
  k=$((k+1))
done
`

export interface GuestImage { kernel: string, initrd: string, kernelPackage: string }

// Why the guest cannot be built here (a missing tool), or null.
export function guestUnavailable (): string | null {
  for (const [bin, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['cpio', 'cpio'], ['apt-get', 'apt'], ['dpkg-deb', 'dpkg']] as const) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).status !== 0) return `${bin} not found (Debian package ${pkg}; scripts/setup.sh installs it)`
  }
  if (!fs.existsSync(BUSYBOX)) return `${BUSYBOX} is missing (Debian package busybox-static)`
  return null
}

// The kernel package linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64.
function kernelPackage (): string {
  const out = execFileSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8' })
  const m = /Depends:\s*(linux-image-[0-9][^\s]*-amd64)/.exec(out)
  if (m === null) throw new Error(`cannot tell which kernel linux-image-amd64 depends on (apt-cache said: ${out.trim().slice(0, 200)}); run apt-get update?`)
  return m[1]
}

// A module's dependencies, from its .modinfo section ("depends=a,b\0").
function moduleDepends (file: string): string[] {
  const text = fs.readFileSync(file).toString('latin1')
  const m = /\0depends=([^\0]*)\0/.exec(text)
  return m === null || m[1] === '' ? [] : m[1].split(',')
}

function findModules (root: string): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.name.endsWith('.ko')) out.set(e.name.slice(0, -3).replace(/-/g, '_'), p)
    }
  }
  walk(root)
  return out
}

// Kernel + the modules we need, unpacked once into .cache/guest/kernel-<pkg>/.
function ensureKernel (): { dir: string, pkg: string } {
  const pkg = kernelPackage()
  const dir = path.join(GUEST_CACHE_DIR, `kernel-${pkg}`)
  if (fs.existsSync(path.join(dir, 'ready'))) return { dir, pkg }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-guest-kernel-'))
  try {
    execFileSync('apt-get', ['download', '-q', pkg], { cwd: work, stdio: ['ignore', 'ignore', 'pipe'] })
    const deb = fs.readdirSync(work).find(f => f.endsWith('.deb'))
    if (deb === undefined) throw new Error(`apt-get download ${pkg} produced no .deb`)
    const x = path.join(work, 'x')
    execFileSync('dpkg-deb', ['-x', path.join(work, deb), x])
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(path.join(dir, 'modules'), { recursive: true })
    const vmlinuz = fs.readdirSync(path.join(x, 'boot')).find(f => f.startsWith('vmlinuz-'))
    if (vmlinuz === undefined) throw new Error(`${pkg} has no /boot/vmlinuz-*`)
    fs.copyFileSync(path.join(x, 'boot', vmlinuz), path.join(dir, 'vmlinuz'))
    const modRoot = [path.join(x, 'lib', 'modules'), path.join(x, 'usr', 'lib', 'modules')].find(p => fs.existsSync(p))
    if (modRoot === undefined) throw new Error(`${pkg} has no modules directory`)
    const all = findModules(modRoot)
    const order: string[] = []
    const visit = (name: string, depth: number): void => {
      if (order.includes(name)) return
      const file = all.get(name)
      if (file === undefined) throw new Error(`${pkg} has no module ${name}`)
      if (depth > 16) throw new Error(`module dependency loop at ${name}`)
      for (const d of moduleDepends(file)) visit(d.replace(/-/g, '_'), depth + 1)
      order.push(name)
      fs.copyFileSync(file, path.join(dir, 'modules', `${name}.ko`))
    }
    for (const m of WANTED_MODULES) visit(m, 0)
    fs.writeFileSync(path.join(dir, 'modules.load'), order.join('\n') + '\n')
    fs.writeFileSync(path.join(dir, 'ready'), `${pkg}\n`)
    return { dir, pkg }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

// Builds (or finds) the guest; the initramfs is keyed by the init script and busybox.
export function ensureGuest (): GuestImage {
  const k = ensureKernel()
  const hash = createHash('sha256').update(INIT).update(fs.readFileSync(BUSYBOX)).update(fs.readFileSync(path.join(k.dir, 'modules.load'))).digest('hex').slice(0, 16)
  const initrd = path.join(GUEST_CACHE_DIR, `initrd-${hash}.cpio.gz`)
  if (!fs.existsSync(initrd)) {
    const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'ukai-guest-initrd-'))
    try {
      for (const d of ['bin', 'etc', 'lib/modules', 'dev', 'proc', 'sys', 'tmp']) fs.mkdirSync(path.join(stage, d), { recursive: true })
      fs.copyFileSync(BUSYBOX, path.join(stage, 'bin', 'busybox'))
      fs.chmodSync(path.join(stage, 'bin', 'busybox'), 0o755)
      fs.writeFileSync(path.join(stage, 'init'), INIT, { mode: 0o755 })
      fs.copyFileSync(path.join(k.dir, 'modules.load'), path.join(stage, 'etc', 'modules.load'))
      for (const f of fs.readdirSync(path.join(k.dir, 'modules'))) fs.copyFileSync(path.join(k.dir, 'modules', f), path.join(stage, 'lib', 'modules', f))
      const tmp = `${initrd}.tmp-${process.pid}`
      execFileSync('sh', ['-c', `find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > '${tmp}'`], { cwd: stage })
      fs.renameSync(tmp, initrd)
    } finally {
      fs.rmSync(stage, { recursive: true, force: true })
    }
  }
  return { kernel: path.join(k.dir, 'vmlinuz'), initrd, kernelPackage: k.pkg }
}

// What the expected record in SLOT after round SEQ looks like, for host-side checks of the disk.
export function guestRecord (seq: number, slot: number): Buffer {
  const b = Buffer.alloc(GUEST_RECORD_BYTES)
  b.write(`UKAI seq=${String(seq).padStart(10, '0')} slot=${String(slot).padStart(6, '0')}\n`, 'latin1')
  return b
}
