#!/usr/bin/env bash
# `make demo`: the DAG end to end with `airflow dags test`, twice, then the results table.
# Synthetic Market-1501 + demo checkpoint unless REID_DATASET_ROOT / REID_CHECKPOINT are set.
# Env: REID_DEMO_RUNS (default 2), REID_DEMO_TARGETS (JSON list, default ["onnxruntime"]),
#      REID_DEMO_BATCH_SIZES (JSON list, default [1, 16]), REID_DEMO_OVERRIDES (JSON list of "KEY VALUE").
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow_env.sh
source "$HERE/airflow_env.sh"
test -x "$VENV_BIN/python" || { echo "no virtualenv at $VENV_BIN (make venv)" >&2; exit 1; }

start=$(date +%s)
"$HERE/setup_airflow.sh"

conf=$(python - <<'PY'
import json, os
conf = {
    "targets": json.loads(os.environ.get("REID_DEMO_TARGETS") or '["onnxruntime"]'),
    "batch_sizes": json.loads(os.environ.get("REID_DEMO_BATCH_SIZES") or "[1, 16]"),
    "dataset_root": os.environ.get("REID_DATASET_ROOT", ""),
    "checkpoint": os.environ.get("REID_CHECKPOINT", ""),
}
if not conf["dataset_root"]:
    # Demo timing on the synthetic set: fewer timed repetitions, pure-inference batches and parity images than a
    # nightly run (VALIDATION.BENCH defaults). REID_DEMO_OVERRIDES='[]' restores the defaults.
    conf["config_overrides"] = json.loads(
        os.environ.get("REID_DEMO_OVERRIDES")
        or '["VALIDATION.BENCH.REPEATS 2", "VALIDATION.BENCH.PURE_BATCHES 4", "VALIDATION.PARITY.SAMPLE 64"]'
    )
print(json.dumps(conf))
PY
)

runs="${REID_DEMO_RUNS:-2}"
status=0
for i in $(seq 1 "$runs"); do
  echo "== run $i/$runs: airflow dags test reid_validation --conf '$conf'"
  log="$AIRFLOW_HOME/demo_run_$i.log"
  t0=$(date +%s)
  if airflow dags test reid_validation --conf "$conf" >"$log" 2>&1; then rc=0; else rc=$?; status=$rc; fi
  # The regression check's verdict lines (full log in $log).
  grep -E "^(ALERT \[|no verdict: |run .* alert\(s\)|accuracy vs published)" "$log" | awk '!seen[$0]++' | head -n 40 || true
  if [ "$rc" -eq 0 ]; then result="success"; else result="FAILED (exit $rc; see $log)"; fi
  echo "-- run $i: $result in $(( $(date +%s) - t0 )) s"
done

echo "== reid-validate results --limit 20"
if command -v reid-validate >/dev/null; then cli=(reid-validate); else cli=(python -m reid_tasks.cli); fi
"${cli[@]}" results --limit 20
echo "== open alerts"
"${cli[@]}" alerts --open --limit 20 || true
echo "== demo took $(( $(date +%s) - start )) s"
exit "$status"
