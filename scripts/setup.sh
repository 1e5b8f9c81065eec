#!/usr/bin/env bash
# Installs what plexus needs from Debian 12's archive (as root) and builds it into ./build.
# Safe to run again: installed packages and an existing build directory are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc meson ninja-build pkg-config python3
          libyaml-dev libopenblas-dev check zlib1g-dev libpng-dev
          dataset-fashion-mnist
          chromium)   # renders report.html in tests/test_report.c (skipped without it)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

builddir=${PLEXUS_BUILDDIR:-build}
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" ${PLEXUS_MESON_ARGS:-}
fi
ninja -C "$builddir"
