#!/usr/bin/env bash
# One-shot initialisation run by the `airflow-init` service of docker-compose.yaml (idempotent):
# Airflow metadata migration, the admin user's password for the simple auth manager, the pools (Ascend:
# one slot per device of the fleet, the worker leases the device) and the results database migration.
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME in .env}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"

airflow db migrate

# The simple auth manager reads {"user": "password"} from this file; write it atomically.
passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
mkdir -p "$(dirname "${passwords_file}")"
python - "${passwords_file}" <<'PY'
import json, os, sys
path = sys.argv[1]
tmp = path + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
os.chmod(tmp, 0o600)
os.replace(tmp, path)
PY

airflow pools set ascend310_devices 1 "Ascend devices, one benchmark each (the compose file's worker: device 0)"
airflow pools set cpu_bench 1 "CPU benchmarks: one at a time so they do not disturb each other"

reid-validate db upgrade

airflow version
