#!/usr/bin/env bash
# One-shot initialisation run by the `airflow-init` service of docker-compose.yaml (idempotent):
# Airflow metadata migration (the FAB auth manager's tables included), the admin user of the FAB auth
# manager from the secrets in docker/.env, the pools (Ascend: one slot per device of the fleet, the worker
# leases the device) and the results database migration.
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME in .env}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"
: "${AIRFLOW_ADMIN_EMAIL:?set AIRFLOW_ADMIN_EMAIL in .env}"

airflow db migrate

# `users create` leaves an existing user alone; `users reset-password` then makes the password the one in .env
# (rotating the secret and re-running airflow-init changes it).
airflow users create --username "$AIRFLOW_ADMIN_USERNAME" --password "$AIRFLOW_ADMIN_PASSWORD" --email "$AIRFLOW_ADMIN_EMAIL" --firstname Airflow --lastname Admin --role Admin
airflow users reset-password --username "$AIRFLOW_ADMIN_USERNAME" --password "$AIRFLOW_ADMIN_PASSWORD"

airflow pools set ascend310_devices 1 "Ascend devices, one benchmark each (the compose file's worker: device 0)"
airflow pools set cpu_bench 1 "CPU benchmarks: one at a time so they do not disturb each other"

reid-validate db upgrade

airflow version
