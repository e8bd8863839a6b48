#!/usr/bin/env bash
# `make demo`: the DAG end to end with `airflow dags test`, twice, then the results table.
# Synthetic Market-1501 + demo checkpoint unless REID_DATASET_ROOT / REID_CHECKPOINT are set.
# Env: REID_DEMO_RUNS (default 2), REID_DEMO_TARGETS (JSON list, default ["onnxruntime"]),
#      REID_DEMO_BATCH_SIZES (JSON list, default [1, 16]), REID_DEMO_OVERRIDES (JSON list of "KEY VALUE" run
#      settings). Deployment settings (demo allowed, benchmark sizes): $REID_CONFIG_FILE, see airflow_env.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow_env.sh
source "$HERE/airflow_env.sh"
test -x "$VENV_BIN/python" || { echo "no virtualenv at $VENV_BIN (make venv)" >&2; exit 1; }

start=$(date +%s)
"$HERE/setup_airflow.sh"

# A dataset / checkpoint of your own must lie under the allowed roots (deployment setting): allow their folders.
roots="$REID_DATA_DIR"
for p in "${REID_DATASET_ROOT:-}" "${REID_CHECKPOINT:-}"; do
  if [ -n "$p" ]; then roots="$roots:$(dirname "$(realpath "$p")")"; fi
done
export REID_ALLOWED_ROOTS="${REID_ALLOWED_ROOTS:-$roots}"

conf=$(python - <<'PY'
import json, os
conf = {
    "targets": json.loads(os.environ.get("REID_DEMO_TARGETS") or '["onnxruntime"]'),
    "batch_sizes": json.loads(os.environ.get("REID_DEMO_BATCH_SIZES") or "[1, 16]"),
    "dataset_root": os.environ.get("REID_DATASET_ROOT") or None,
    "checkpoint": os.environ.get("REID_CHECKPOINT") or None,
}
# Run settings only (reid_tasks/settings.py RUN_SETTABLE_KEYS); the demo's benchmark sizes are deployment
# settings in $REID_CONFIG_FILE (reid_tasks/configs/demo_deployment.yml by default).
if os.environ.get("REID_DEMO_OVERRIDES"):
    conf["config_overrides"] = json.loads(os.environ["REID_DEMO_OVERRIDES"])
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
