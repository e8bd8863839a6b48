# shellcheck shell=bash
# Source me: the embedded Airflow environment of this checkout (SQLite metadata in .airflow/).
# Every variable already set in the environment wins, so a deployment can point elsewhere.
REID_ROOT="${REID_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export REID_ROOT
export AIRFLOW_HOME="${AIRFLOW_HOME:-$REID_ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$REID_ROOT/dags}"
# The "ReID validation" pages are registered by the installed package's `airflow.plugins` entry point
# (the only registration path); Airflow's plugins folder stays a folder of its own for other plugins.
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$AIRFLOW_HOME/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
# reid_tasks is imported by the DAG and its tasks from the checkout.
export PYTHONPATH="$REID_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Data (synthetic set, caches, artifacts, SQLite results) stays inside the checkout unless configured.
export REID_DATA_DIR="${REID_DATA_DIR:-$REID_ROOT/.data}"
# Deployment settings read by the tasks on the worker (reid_tasks/settings.py): demo runs allowed, demo-sized
# benchmarks. A deployment sets its own file (and/or the Airflow Variable reid_deployment_config).
export REID_CONFIG_FILE="${REID_CONFIG_FILE:-$REID_ROOT/reid_tasks/configs/demo_deployment.yml}"
VENV_BIN="${VENV_BIN:-$REID_ROOT/.venv/bin}"
export PATH="$VENV_BIN:$PATH"
mkdir -p "$AIRFLOW_HOME" "$AIRFLOW__CORE__PLUGINS_FOLDER" "$REID_DATA_DIR"
