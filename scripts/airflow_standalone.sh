#!/usr/bin/env bash
# `make airflow`: airflow standalone on http://localhost:8080 with the reid_validation DAG and the
# "ReID validation" pages. Executor parallelism follows the machine's cores; Ctrl-C or TERM stops
# Airflow and every process it started (nothing is left running).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/airflow_env.sh
source "$HERE/airflow_env.sh"
cores="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-localhost}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
# LocalExecutor starts one worker process per parallelism slot (Airflow's default is 32).
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$cores}"
export AIRFLOW__API__WORKERS="${AIRFLOW__API__WORKERS:-1}"
export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="${AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES:-1}"
STOP_TIMEOUT_S="${REID_STOP_TIMEOUT_S:-30}"
"$HERE/setup_airflow.sh"
pw="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
cat <<MSG
== Airflow UI: http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT  (DAG reid_validation, page "ReID validation")
== user: admin; the generated password is in $pw
   (written on first start; print it with: cat $pw)
== executor parallelism $AIRFLOW__CORE__PARALLELISM ($cores cores); stop with Ctrl-C
== the DAG is paused at creation: unpause it in the UI or trigger it with the form ("Trigger" button).
MSG

# Airflow runs in a process group of its own (job control), so a stop reaches every process it started;
# processes that left the group (a new session) are found through the process tree.
set -m
airflow standalone &
leader=$!

tree() {  # the pids below $1, deepest last
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    echo "$child"
    tree "$child"
  done
}

alive() {  # the processes of the group or of the given pids that still run (zombies are finished)
  ps -e -o pid=,pgid=,stat= | awk -v g="$leader" -v list=" $* " \
    '$3 !~ /^Z/ && ($2 == g || index(list, " " $1 " ")) { print $1 }'
}

stop() {
  trap - INT TERM
  local pids i
  pids="$(tree "$leader" | tr '\n' ' ')"
  kill -TERM -- "-$leader" 2>/dev/null || true
  # shellcheck disable=SC2086 # one pid per word
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT_S * 2; i++)); do
    # shellcheck disable=SC2086
    [ -z "$(alive $pids)" ] && break
    sleep 0.5
  done
  # shellcheck disable=SC2086
  if [ -n "$(alive $pids)" ]; then
    echo "== Airflow did not stop within ${STOP_TIMEOUT_S}s: killing what is left" >&2
    kill -KILL -- "-$leader" 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  wait "$leader" 2>/dev/null || true
}

trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
rc=0
wait "$leader" || rc=$?
# Airflow exited on its own: take down whatever it left behind.
stop
exit "$rc"
