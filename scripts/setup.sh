#!/usr/bin/env bash
# Bring a Debian 12 machine (developer, CI) to the point where `npm test` can run:
# system packages, node_modules, a compiled dist/. Idempotent and fast (< 3 s) when nothing
# is missing: every step checks before it acts.
#
#   UKAI_SETUP_FORCE_BUILD=1  rebuild dist/ even if it looks up to date
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

say () { printf 'setup: %s\n' "$*" >&2; }
die () { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=''
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install Debian packages"
  SUDO='sudo'
fi

# --- 1. Debian packages -------------------------------------------------------------------------
# zookeeper: metadata store (its default-jre dependency brings java)
# libfuse2, fuse: what fuse-native's binding links against, and fusermount
# fio: benchmarks; qemu-utils: qemu-img/qemu-io for the libvirt/qemu tests
# libfuse-dev, pkg-config, g++, make, python3: build fuse-native (patched: fallocate) and the
#   storage node's punch-hole addon from source with node-gyp (scripts/build-native.sh)
# libsystemd-dev: sd_notify for the daemons' readiness under Type=notify units (native/sd-notify)
# attr: setfattr/getfattr for the xattr tests
# libxml2-utils: xmllint, which checks the libvirt example domains against libvirt's schema
# qemu-system-x86: the guest in the QEMU tests and the migration benchmark (TCG where KVM fails);
# busybox-static, cpio: the guest's initramfs (test/helpers/guest.ts; its kernel is fetched with
# `apt-get download`, never installed)
# libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients: libvirtd and virsh for the libvirt
# test (it runs its own libvirtd in session mode; not libvirt-daemon-system, which pulls in systemd
# as init and starts services)
APT_PACKAGES=(zookeeper libfuse2 fuse fio qemu-utils tmux libxml2-utils libfuse-dev libsystemd-dev pkg-config g++ make python3 attr qemu-system-x86 busybox-static cpio libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # No package may start a daemon here (libvirt's would): a policy-rc.d that says no, unless the
  # machine has one already.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && own_policy=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { [ "$own_policy" = 1 ] && $SUDO rm -f "$policy"; die "apt-get install failed"; }
  if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
fi
[ -f /usr/share/java/zookeeper.jar ] || die "zookeeper is installed but /usr/share/java/zookeeper.jar is missing"
command -v java >/dev/null 2>&1 || die "java not found (Debian's zookeeper package should have pulled in default-jre)"
command -v fusermount >/dev/null 2>&1 || die "fusermount not found (package 'fuse')"

# --- 2. node_modules ----------------------------------------------------------------------------
# npm keeps its own copy of the lock in node_modules/.package-lock.json; we touch it after a
# successful install so that "package-lock.json is newer" means "someone changed the lock".
STAMP_NPM=node_modules/.package-lock.json
if [ ! -d node_modules ] || [ ! -f "$STAMP_NPM" ] || [ package-lock.json -nt "$STAMP_NPM" ]; then
  # npm ci empties node_modules; through a symlink that would wipe another tree's install.
  [ -L node_modules ] && die "node_modules is a symlink and looks stale: refusing to run npm ci through it"
  say "npm ci (node_modules missing or older than package-lock.json)"
  npm ci --no-audit --no-fund --loglevel=error
  touch "$STAMP_NPM"
fi

# --- 2b. native addons ---------------------------------------------------------------------------
# fuse-native with fallocate, and the storage node's punch-hole, built from source (fast when
# already built: each is stamped with the hash of its inputs).
bash scripts/build-native.sh || die "building the native addons failed (see above)"

# --- 3. build -----------------------------------------------------------------------------------
# dist/.build-stamp is touched after every successful tsc; rebuild when any TypeScript source,
# tsconfig.json or package-lock.json is newer than it.
STAMP_BUILD=dist/.build-stamp
need_build=0
if [ "${UKAI_SETUP_FORCE_BUILD:-0}" = 1 ] || [ ! -f "$STAMP_BUILD" ]; then
  need_build=1
elif [ tsconfig.json -nt "$STAMP_BUILD" ] || [ package-lock.json -nt "$STAMP_BUILD" ]; then
  need_build=1
else
  dirs=()
  for d in src test bench; do [ -d "$d" ] && dirs+=("$d"); done
  if [ "${#dirs[@]}" -gt 0 ] && [ -n "$(find "${dirs[@]}" -name '*.ts' -newer "$STAMP_BUILD" -print -quit)" ]; then
    need_build=1
  fi
fi
if [ "$need_build" = 1 ]; then
  say "building (tsc -p tsconfig.json)"
  mkdir -p dist
  # Take the stamp's time before compiling so a file saved during the build triggers the next one.
  touch "$STAMP_BUILD.$$"
  if ! node_modules/.bin/tsc -p tsconfig.json; then
    rm -f "$STAMP_BUILD.$$"
    die "TypeScript build failed"
  fi
  mv -f "$STAMP_BUILD.$$" "$STAMP_BUILD"
fi

# --- 4. FUSE device -----------------------------------------------------------------------------
if [ ! -c /dev/fuse ]; then
  say "WARNING: /dev/fuse does not exist: FUSE mounts (ukai mount, the mount tests) cannot work here."
  say "         Load the module ('modprobe fuse') or, in a container, run it with --device /dev/fuse."
fi

exit 0
