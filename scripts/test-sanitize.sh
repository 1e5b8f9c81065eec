#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer, in its own build
# directory (build-asan; PLEXUS_ASAN_BUILDDIR overrides). Any report fails the run: leaks
# (LeakSanitizer), out-of-bounds and use-after-free, and undefined behaviour (halt_on_error).
# Plugins are never dlclose'd, so reports inside them are symbolised. Sanitizer reports exit
# with status 86, so one in a plexus child process never passes for an expected exit code.
#
# Every suite runs, `pipelines` (the reduced training of every example pipeline) included;
# PLEXUS_ASAN_SUITES selects others (any `meson test` selection, e.g. "--suite core").
# docs/reliability.md has the measured times.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${PLEXUS_ASAN_BUILDDIR:-build-asan}
if [ ! -f "$builddir/build.ninja" ]; then
  # b_lundef=false: the sanitizer runtimes resolve the plugins' undefined symbols at load time
  meson setup "$builddir" -Db_sanitize=address,undefined -Db_lundef=false
fi
ninja -C "$builddir"
export ASAN_OPTIONS=detect_leaks=1:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=86
export LSAN_OPTIONS=print_suppressions=0
# test_hardening's SIGKILL test: 25 kills instead of 100 (each restart of the instrumented
# plexus costs more; the normal run does the full 100)
export PLEXUS_TEST_KILLS=${PLEXUS_TEST_KILLS:-25}
t0=$(date +%s)
status=0
# shellcheck disable=SC2086  # PLEXUS_ASAN_SUITES is a list of meson test arguments
meson test -C "$builddir" --print-errorlogs --num-processes 2 \
  ${PLEXUS_ASAN_SUITES:-} || status=$?
echo "sanitizers (address, undefined): $([ $status -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 ))s"
exit $status
