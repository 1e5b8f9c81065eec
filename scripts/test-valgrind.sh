#!/usr/bin/env bash
# The test suite under valgrind memcheck: every memory error and every definitely lost block
# fails the run. Tests that start the plexus command run it under valgrind too
# (--trace-children; compilers, shells, Python and Chromium are not traced). Uses the normal
# build (build; PLEXUS_BUILDDIR overrides). Sized for CI: every suite but `pipelines`, whose
# training runs take about 40 minutes under memcheck even in smoke mode;
# PLEXUS_VALGRIND_SUITES="--suite pipelines" runs it (docs/reliability.md), or any other
# `meson test` selection. Plugins are never dlclose'd, so reports inside them are symbolised.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${PLEXUS_BUILDDIR:-build}
source scripts/apt.sh
apt_install test-valgrind valgrind
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir"
fi
ninja -C "$builddir"
# valgrind 3.19 does not emulate AVX-512: keep OpenBLAS on its AVX2 kernels (the plugins pick
# their kernels from CPUID, which valgrind reports without AVX-512)
export OPENBLAS_CORETYPE=Haswell
export CK_FORK=no
export PLEXUS_TEST_SMOKE=1   # training runs of the example pipelines: 3 steps (hours otherwise)
export PLEXUS_TEST_KILLS=${PLEXUS_TEST_KILLS:-25}   # test_hardening's SIGKILLs (100 normally)
wrapper="valgrind --quiet --error-exitcode=86 --leak-check=full --errors-for-leak-kinds=definite"
wrapper+=" --show-leak-kinds=definite --trace-children=yes --child-silent-after-fork=yes"
wrapper+=" --trace-children-skip=*/sh,*/bash,*/python3*,*/meson,*/ninja,*/cc,*/gcc*,*/cc1,*/as,*/collect2,*/ld,*/ld.*,*/pkg-config,*/chromium*"
t0=$(date +%s)
status=0
# shellcheck disable=SC2086  # a list of meson test arguments
meson test -C "$builddir" --no-rebuild --print-errorlogs --num-processes 2 \
  --timeout-multiplier 20 --wrapper "$wrapper" \
  ${PLEXUS_VALGRIND_SUITES:---no-suite pipelines} || status=$?
echo "valgrind memcheck: $([ $status -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - t0 ))s"
exit $status
