#!/usr/bin/env bash
# `make airflow`: airflow standalone on http://localhost:8080 with the reid_validation DAG and plugin.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow_env.sh
source "$HERE/airflow_env.sh"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-localhost}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
"$HERE/setup_airflow.sh"
pw="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
cat <<MSG
== Airflow UI: http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT  (DAG reid_validation, page "ReID results")
== user: admin; the generated password is in $pw
   (written on first start; print it with: cat $pw)
== the DAG is paused at creation: unpause it in the UI or trigger it with the form ("Trigger" button).
MSG
exec airflow standalone
