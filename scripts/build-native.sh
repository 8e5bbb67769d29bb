#!/usr/bin/env bash
# Builds UKAI's native pieces from source into build/ (called by scripts/setup.sh):
#
#   build/fuse-native  fuse-native 2.2.6 from node_modules with native/fuse-native/*.patch applied
#                      (adds the fallocate operation, ERANGE for short xattr buffers, and a
#                      channel in front of /dev/fuse that amends INIT/OPEN replies for
#                      fn_max_write/fn_parallel_direct_writes and answers FUSE_LSEEK — SEEK_DATA/
#                      SEEK_HOLE, which libfuse 2 lacks — through a JS lseek operation;
#                      docs/architecture.md), compiled against Debian's libfuse-dev. The mount agent loads this copy, never the
#                      prebuilt binding in node_modules.
#   build/punch-hole   fallocate(PUNCH_HOLE) for the storage node's discard.
#   build/sd-notify    libsystemd's sd_notify for Type=notify units (both daemons' readiness).
#   build/pread-sums   pread + crc32c per 4 KiB page (the checksum sidecar's values) as one call,
#                      async on libuv's thread pool: a read's checksum work runs where its bytes
#                      land instead of on the event loop (agent short-circuit reads, node reads);
#                      its write twin (pwrite + crc + the sidecar's pwrite, the node's writes), and
#                      fdatasync of many descriptors in one pool job (the node's flush).
#                      SSE4.2 crc32 instruction when the CPU has it (checked at load), tables else.
#                      Measured: docs/performance.md "Checksums".
#
# Each is rebuilt only when its inputs change (a stamp holds their hash), built in a temporary
# directory and moved into place only after it loads, so a failed build never leaves a half one.
# Fails loudly: a mount without fallocate or a node that cannot free space is not an option.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

say () { printf 'build-native: %s\n' "$*" >&2; }
die () { printf 'build-native: ERROR: %s\n' "$*" >&2; exit 1; }

FUSE_NATIVE_VERSION=2.2.6
FUSE_NATIVE_SRC=node_modules/fuse-native

# node-gyp ships inside npm; Node's own headers come from the Node installation (no download).
NPM_CLI=$(readlink -f "$(command -v npm)") || die "npm not found"
NODE_GYP="$(dirname "$NPM_CLI")/../node_modules/node-gyp/bin/node-gyp.js"
[ -f "$NODE_GYP" ] || die "node-gyp not found at $NODE_GYP (it ships with npm)"
NODE_PREFIX=$(node -p 'require("path").resolve(process.execPath, "..", "..")')
[ -f "$NODE_PREFIX/include/node/node_api.h" ] || die "Node's headers are missing ($NODE_PREFIX/include/node/node_api.h); node-gyp would try to download them"
pkg-config --exists fuse || die "pkg-config does not know libfuse (install Debian's libfuse-dev)"
pkg-config --exists libsystemd || die "pkg-config does not know libsystemd (install Debian's libsystemd-dev)"

inputs_hash () {
  { node -p 'process.version + " " + process.arch'; cat "$@"; } | sha256sum | cut -d' ' -f1
}

# build_addon NAME SRC_DIR STAMP_HASH PREPARE_FN CHECK_JS
build_addon () {
  local name=$1 src=$2 hash=$3 prepare=$4 check=$5
  local out="build/$name" tmp="build/$name.tmp"
  if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$hash" ]; then return 0; fi
  say "building $name"
  rm -rf "$tmp"
  mkdir -p build
  cp -r "$src" "$tmp"
  "$prepare" "$tmp"
  if ! (cd "$tmp" && node "$NODE_GYP" rebuild --nodedir="$NODE_PREFIX" --loglevel=error >build.log 2>&1); then
    cat "$tmp/build.log" >&2
    die "node-gyp failed for $name (log above)"
  fi
  node -e "$check" "$ROOT/$tmp" || die "$name built but does not load (see above)"
  echo "$hash" > "$tmp/.stamp"
  rm -rf "$out"
  mv "$tmp" "$out"
}

prepare_fuse_native () {
  local dir=$1
  rm -rf "$dir/prebuilds" "$dir/build"   # node-gyp-build must find our build, never a prebuilt one
  patch -d "$dir" -p1 --quiet --forward < native/fuse-native/fuse-native-$FUSE_NATIVE_VERSION.patch ||
    die "native/fuse-native/fuse-native-$FUSE_NATIVE_VERSION.patch does not apply to $FUSE_NATIVE_SRC"
  cp native/fuse-native/binding.gyp "$dir/binding.gyp"
}

prepare_nothing () { :; }

[ -d "$FUSE_NATIVE_SRC" ] || die "$FUSE_NATIVE_SRC is missing (npm ci first)"
have=$(node -p "require('./$FUSE_NATIVE_SRC/package.json').version")
[ "$have" = "$FUSE_NATIVE_VERSION" ] || die "node_modules has fuse-native $have; native/fuse-native patches $FUSE_NATIVE_VERSION: port the patch"

build_addon fuse-native "$FUSE_NATIVE_SRC" \
  "$(inputs_hash "$FUSE_NATIVE_SRC/package.json" "$FUSE_NATIVE_SRC/fuse-native.c" "$FUSE_NATIVE_SRC/index.js" native/fuse-native/*)" \
  prepare_fuse_native \
  "const F = require(process.argv[1]); if (typeof F.prototype._op_fallocate !== 'function' || typeof F.prototype._op_lseek !== 'function') { console.error('no fallocate or lseek in', process.argv[1]); process.exit(1) }"

build_addon punch-hole native/punch-hole \
  "$(inputs_hash native/punch-hole/*)" \
  prepare_nothing \
  "const m = require(process.argv[1] + '/build/Release/punch_hole.node'); if (typeof m.punchHole !== 'function') process.exit(1)"

build_addon sd-notify native/sd-notify \
  "$(inputs_hash native/sd-notify/*)" \
  prepare_nothing \
  "const m = require(process.argv[1] + '/build/Release/sd_notify.node'); if (typeof m.notify !== 'function') process.exit(1)"

build_addon pread-sums native/pread-sums \
  "$(inputs_hash native/pread-sums/*)" \
  prepare_nothing \
  "const m = require(process.argv[1] + '/build/Release/pread_sums.node'); const s = Buffer.alloc(4); m.pageSumsSync(Buffer.from('ukai'), s); if (typeof m.preadSums !== 'function' || typeof m.linkCountSync !== 'function' || typeof m.pwriteSumsSync !== 'function' || typeof m.fdatasyncAll !== 'function' || s.readUInt32LE(0) === 0) process.exit(1)"
