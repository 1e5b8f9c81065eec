#!/usr/bin/env bash
# Set up, build and run the whole test suite (meson test), then print one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
meson test -C build --print-errorlogs --num-processes 2 || status=$?
/usr/bin/python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
res = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = sum(r["result"] in ("OK", "EXPECTEDFAIL") for r in res)
skip = sum(r["result"] == "SKIP" for r in res)
print(f"{ok} passed, {len(res) - ok - skip} failed, {skip} skipped")
PY
exit $status
