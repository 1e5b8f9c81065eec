#!/usr/bin/env bash
# Installs what plexus needs from Debian 12's archive (as root) and builds it into ./build.
# Safe to run again: installed packages and an existing build directory are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(gcc meson ninja-build pkg-config python3
          libyaml-dev libopenblas-dev check zlib1g-dev libpng-dev
          dataset-fashion-mnist
          chromium)   # renders report.html in tests/test_report.c (skipped without it)
source scripts/apt.sh
apt_install setup "${packages[@]}"

builddir=${PLEXUS_BUILDDIR:-build}
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" ${PLEXUS_MESON_ARGS:-}
fi
ninja -C "$builddir"
