"""``[core] hostname_callable`` for the Celery integration test: two workers on one machine need distinct
task-instance hostnames, so each reports $REID_WORKER_HOSTNAME (socket.getfqdn() when unset)."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("REID_WORKER_HOSTNAME") or socket.getfqdn()
