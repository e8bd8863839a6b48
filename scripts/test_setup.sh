#!/usr/bin/env bash
# What `make test` needs besides the venv: PostgreSQL and Redis on 127.0.0.1 (started when installed but
# down), Debian's chromium + chromedriver (installed by `make system-deps` when this user may). Whatever
# cannot be had is named with the command that gets it. Outside CI the tests that need it are then skipped
# with that reason (pytest lists them); with CI=true it is an error here and in the tests.
set -uo pipefail
cd "$(dirname "$0")/.."

ci=false
[[ "${CI:-}" == "true" || "${CI:-}" == "1" ]] && ci=true
missing=()
log() { printf '[test-setup] %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

# PostgreSQL: results-store tests, the Airflow metadata database of the integration tests.
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "PostgreSQL: running on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]] && [[ -n "$(ls /etc/postgresql 2>/dev/null)" ]]; then
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  log "PostgreSQL $version: installed but down, starting it"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start \
    || log "could not start it as $(id -un) (needs root or the postgres user): pg_ctlcluster $version main start"
  for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
  pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || missing+=("PostgreSQL did not come up on 127.0.0.1:5432 (see: pg_lsclusters)")
else
  missing+=("PostgreSQL is not installed: apt-get install -y postgresql (trust auth for 127.0.0.1, user postgres)")
fi

# Redis: the Celery broker of the integration tests.
if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "Redis: running on 127.0.0.1:6379"
elif command -v redis-server >/dev/null; then
  log "Redis: installed but down, starting it"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || missing+=("Redis did not come up on 127.0.0.1:6379")
else
  missing+=("Redis is not installed: apt-get install -y redis-server")
fi

# Debian's chromium + chromedriver: the browser tests (no browser download).
if make --no-print-directory -s system-deps; then
  log "chromium: $(command -v chromium)"
else
  missing+=("chromium/chromedriver are not installed and this user cannot install them: sudo make system-deps (apt-get install -y chromium chromium-driver)")
fi

if ((${#missing[@]})); then
  for m in "${missing[@]}"; do log "MISSING: $m"; done
  if $ci; then
    log "CI=true: every service and the browser are required; stopping"
    exit 1
  fi
  log "the tests that need the above are skipped with this reason (CI=true makes it an error)"
fi
exit 0
