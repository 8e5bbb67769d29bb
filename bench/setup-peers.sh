#!/usr/bin/env bash
# Debian packages for the bench's peer targets only (bench/peers.ts runs this for the peers in
# BENCH_TARGETS; never the test path, which needs none of them):
#   gluster  glusterfs-server (glusterd, glusterfsd bricks) and glusterfs-client (the FUSE mount)
#   ceph     ceph-mon, ceph-osd (bluestore OSDs) and ceph-common (the ceph and rbd CLIs); no
#            ceph-mgr: RBD I/O does not need it, and it pulls in ~100 Python packages
#   qemu-nbd qemu-utils (also in scripts/setup.sh)
# fio (scripts/setup.sh) must list the engines the peers use: nbd, rbd.
# No package may start a daemon on install: a policy-rc.d that says no, as scripts/setup.sh does.
#
#   bash bench/setup-peers.sh gluster ceph qemu-nbd
set -euo pipefail

say () { printf 'setup-peers: %s\n' "$*" >&2; }
die () { printf 'setup-peers: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=''
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install Debian packages"
  SUDO='sudo'
fi

packages=()
for peer in "$@"; do
  case "$peer" in
    gluster) packages+=(glusterfs-server glusterfs-client) ;;
    ceph) packages+=(ceph-mon ceph-osd ceph-common) ;;
    qemu-nbd|ukai-nbd) packages+=(qemu-utils) ;;
    *) die "unknown peer '$peer' (known: gluster, ceph, qemu-nbd, ukai-nbd)" ;;
  esac
done

missing=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && own_policy=1
  fi
  ok=1
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  } || ok=0
  if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
  [ "$ok" = 1 ] || die "apt-get install ${missing[*]} failed"
fi

engines=$(fio --enghelp 2>&1 || true)
for peer in "$@"; do
  case "$peer" in
    ceph) grep -qw rbd <<<"$engines" || die "this fio has no rbd engine (fio --enghelp)" ;;
    qemu-nbd|ukai-nbd) grep -qw nbd <<<"$engines" || die "this fio has no nbd engine (fio --enghelp)" ;;
  esac
done
exit 0
