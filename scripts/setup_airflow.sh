#!/usr/bin/env bash
# Create/upgrade the Airflow metadata database and the pools the DAG needs.
# Usage: scripts/setup_airflow.sh   (embedded: .airflow/ with SQLite; any AIRFLOW_* already set wins)
set -euo pipefail
# shellcheck source=scripts/airflow_env.sh
source "$(dirname "${BASH_SOURCE[0]}")/airflow_env.sh"

echo "== airflow db migrate (AIRFLOW_HOME=$AIRFLOW_HOME)"
airflow db migrate >"$AIRFLOW_HOME/db_migrate.log" 2>&1 || { tail -n 40 "$AIRFLOW_HOME/db_migrate.log"; exit 1; }

echo "== results database schema (reid-validate db upgrade; SQLite would also migrate on first use)"
python -m reid_tasks.cli db upgrade

echo "== pools"
python "$REID_ROOT/scripts/airflow_pools.py" >"$AIRFLOW_HOME/pools.json"
airflow pools import "$AIRFLOW_HOME/pools.json" >/dev/null
airflow pools list
