#!/usr/bin/env bash
# Entrypoint of the Ascend 310 worker: make the host's CANN toolkit and driver usable, check the
# devices are passed through, then hand over to the official Airflow entrypoint.
set -euo pipefail

ASCEND_HOME="${ASCEND_HOME:-/usr/local/Ascend}"

if [[ ! -d "${ASCEND_HOME}/driver" ]]; then
    echo "ascend-entrypoint: ${ASCEND_HOME}/driver not found: mount the host's ${ASCEND_HOME} read-only" >&2
    exit 1
fi
for dev in /dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc; do
    if [[ ! -e "${dev}" ]]; then
        echo "ascend-entrypoint: ${dev} missing: pass it with 'devices:' (docker-compose profile ascend)" >&2
        exit 1
    fi
done
if ! compgen -G "/dev/davinci[0-9]*" > /dev/null; then
    echo "ascend-entrypoint: no /dev/davinci<N> device passed through" >&2
    exit 1
fi

# The driver libraries first, then whatever the toolkit's set_env.sh adds (PATH to atc, PYTHONPATH to
# te/hccl, ASCEND_OPP_PATH, LD_LIBRARY_PATH of the runtime). nnrt (inference-only runtime) where the
# full toolkit is not installed.
export LD_LIBRARY_PATH="${ASCEND_HOME}/driver/lib64:${ASCEND_HOME}/driver/lib64/common:${ASCEND_HOME}/driver/lib64/driver:${LD_LIBRARY_PATH:-}"
set_env=""
for candidate in "${ASCEND_HOME}/ascend-toolkit/set_env.sh" "${ASCEND_HOME}/nnrt/set_env.sh"; do
    if [[ -f "${candidate}" ]]; then
        set_env="${candidate}"
        break
    fi
done
if [[ -z "${set_env}" ]]; then
    echo "ascend-entrypoint: neither ascend-toolkit/set_env.sh nor nnrt/set_env.sh under ${ASCEND_HOME}" >&2
    exit 1
fi
# set_env.sh is written for interactive shells and reads unset variables.
set +u
# shellcheck disable=SC1090
source "${set_env}"
set -u
export REID_ASCEND_SET_ENV="${set_env}"

exec /entrypoint "$@"
