#!/usr/bin/env bash
# Data-parallel training tests: installs Open MPI from Debian 12 when missing (as root), builds
# plexus with MPI into ./build-mpi, and runs the `mpi` suite under mpirun, comparing with the
# build without MPI in ./build (scripts/setup.sh makes it). Prints one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

packages=(libopenmpi-dev openmpi-bin)
source scripts/apt.sh
apt_install test-mpi "${packages[@]}"

nompi=${PLEXUS_BUILDDIR:-build}
mpi=${PLEXUS_MPI_BUILDDIR:-build-mpi}
if [ ! -f "$mpi/build.ninja" ]; then
  meson setup "$mpi" -Dmpi=enabled
fi
ninja -C "$mpi"

# As root in a container: Open MPI refuses root without these, needs oversubscription for
# more ranks than cores, and shared memory without the kernel's single-copy mechanisms.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export PLEXUS_NOMPI_EXE="$PWD/$nompi/core/plexus"
status=0
meson test -C "$mpi" --suite mpi --print-errorlogs || status=$?
/usr/bin/python3 - "$mpi/meson-logs/testlog.json" <<'PY'
import json, sys
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = sum(r["result"] in ("OK", "EXPECTEDFAIL") for r in res)
skip = sum(r["result"] == "SKIP" for r in res)
print(f"mpi: {ok} passed, {len(res) - ok - skip} failed, {skip} skipped")
PY
exit $status
