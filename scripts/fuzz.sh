#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehaviorSanitizer) into
# build-fuzz and fuzzes them, one after the other, one process each:
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600; all four targets)
#   targets: pipeline checkpoint idx npy (tests/fuzz/fuzz_<target>.c)
#
# SECONDS are CPU seconds of the fuzzer process (polled from /proc every 5 s, then SIGINT),
# so a busy shared machine does not shorten a run; PLEXUS_FUZZ_WALL=1 makes them wall seconds.
# Each target starts from its committed seeds (tests/fuzz/corpus/<target>, never written) plus
# what earlier runs found (build-fuzz/corpus/<target>); crashes go to build-fuzz/crashes/<target>/.
# A summary line per target (CPU and wall seconds, executions, corpus, crash files) is appended
# to build-fuzz/fuzz-log.txt. Needs Debian's clang and libclang-rt-14-dev (it has libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(pipeline checkpoint idx npy)
builddir=${PLEXUS_FUZZ_BUILDDIR:-build-fuzz}
if [ ! -f "$builddir/build.ninja" ]; then
  CC=clang meson setup "$builddir" -Dfuzz=enabled -Db_sanitize=address,undefined \
    -Db_lundef=false -Dc_args="-fsanitize=fuzzer-no-link -Wno-unknown-warning-option"
fi
ninja -C "$builddir" $(printf "tests/fuzz/fuzz_%s " "${targets[@]}")
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PLEXUS_PLUGIN_PATH= PLEXUS_PLUGINSDIR= OPENBLAS_NUM_THREADS=1
hz=$(getconf CLK_TCK)
status=0
for t in "${targets[@]}"; do
  mkdir -p "$builddir/corpus/$t" "$builddir/crashes/$t"
  log="$builddir/fuzz-$t.log"
  echo "fuzzing $t for ${secs}s of $([ -n "${PLEXUS_FUZZ_WALL:-}" ] && echo wall || echo CPU) time (log: $log)"
  limit=()
  [ -n "${PLEXUS_FUZZ_WALL:-}" ] && limit=(-max_total_time="$secs")
  t0=$(date +%s)
  # one process (libFuzzer's default; the same as -jobs=1): CI machines are small and shared;
  # -timeout is wall time, generous because a shared machine may stall a process for seconds
  "$builddir/tests/fuzz/fuzz_$t" "${limit[@]}" -timeout=60 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$builddir/crashes/$t/" \
    "$builddir/corpus/$t" "tests/fuzz/corpus/$t" > "$log" 2>&1 &
  pid=$!
  cpu=0
  while kill -0 "$pid" 2>/dev/null; do
    ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo "")
    [ -n "$ticks" ] && cpu=$(( ticks / hz ))
    if [ -z "${PLEXUS_FUZZ_WALL:-}" ] && [ "$cpu" -ge "$secs" ]; then
      kill -INT "$pid" 2>/dev/null || true   # libFuzzer prints its final stats and exits
      break
    fi
    sleep 5
  done
  rc=0
  wait "$pid" || rc=$?
  [ -z "${PLEXUS_FUZZ_WALL:-}" ] && [ "$cpu" -ge "$secs" ] && [ "$rc" -eq 72 ] && rc=0  # our SIGINT
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  units=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  crashes=$(find "$builddir/crashes/$t" -type f | wc -l)
  line="$(date -u +%FT%TZ) $t: ${cpu}s CPU, $(( $(date +%s) - t0 ))s wall, $execs execs, corpus $units, $crashes crash files, exit $rc"
  echo "$line" | tee -a "$builddir/fuzz-log.txt"
  [ "$rc" -eq 0 ] || status=$rc
done
exit $status
