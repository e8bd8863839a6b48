#!/usr/bin/env bash
# `make demo`: the DAG end to end with `airflow dags test`, twice, then the results table.
# Synthetic Market-1501 + demo checkpoint unless REID_DATASET_ROOT / REID_CHECKPOINT are set.
# Env: REID_DEMO_RUNS (default 2), REID_DEMO_TARGETS (JSON list, default ["onnxruntime"]),
#      REID_DEMO_BATCH_SIZES (JSON list, default [1, 16]).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow_env.sh
source "$HERE/airflow_env.sh"
test -x "$VENV_BIN/python" || { echo "no virtualenv at $VENV_BIN (make venv)" >&2; exit 1; }

start=$(date +%s)
"$HERE/setup_airflow.sh"

conf=$(python - <<PY
import json, os
conf = {
    "targets": json.loads(os.environ.get("REID_DEMO_TARGETS") or '["onnxruntime"]'),
    "batch_sizes": json.loads(os.environ.get("REID_DEMO_BATCH_SIZES") or "[1, 16]"),
    "dataset_root": os.environ.get("REID_DATASET_ROOT", ""),
    "checkpoint": os.environ.get("REID_CHECKPOINT", ""),
}
print(json.dumps(conf))
PY
)

runs="${REID_DEMO_RUNS:-2}"
status=0
for i in $(seq 1 "$runs"); do
  echo "== run $i/$runs: airflow dags test reid_validation --conf '$conf'"
  log="$AIRFLOW_HOME/demo_run_$i.log"
  if airflow dags test reid_validation --conf "$conf" >"$log" 2>&1; then :; else status=$?; fi
  # Task outcomes, the verdict lines and any alert from the log (full log in $log).
  grep -E "Marking task as|no verdict:|regression alert|AirflowFailException|ERROR" "$log" | sed -E 's/^.*\] //' | tail -n 40 || true
  state=$(grep -oE "Dag run .*state=[a-z]+|dag_run_state=[a-z]+" "$log" | tail -n 1 || true)
  echo "-- run $i finished ${state:+($state)} in log $log"
done

echo "== reid-validate results --limit 20"
reid-validate results --limit 20
echo "== open alerts"
reid-validate alerts --open --limit 20 || true
echo "== demo took $(( $(date +%s) - start )) s"
exit "$status"
