"""Helpers shared by the plugin tests, in a module of their own (every test folder has a conftest.py, so
``from conftest import ...`` would pick whichever was imported first)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# username -> (simple auth manager role, password)
USERS = {"viewer": ("viewer", "viewer-pw-1"), "editor": ("user", "editor-pw-2"), "admin": ("admin", "admin-pw-3")}
JWT_SECRET = "reid-plugin-tests-jwt-secret-" + "0123456789abcdef" * 4  # >= 64 bytes for HS512


def auth_env(passwords_file: Path) -> dict[str, str]:
    """Airflow settings of the simple auth manager with USERS (also used by the browser test's server)."""
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, (r, _) in USERS.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
    }


def write_passwords(path: Path) -> Path:
    path.write_text(json.dumps({u: pw for u, (_, pw) in USERS.items()}), encoding="utf-8")
    return path


def mounted(db_url: str) -> Any:
    """An Airflow-like parent app with the plugin app mounted at /reid (as airflow.api_fastapi.app does)."""
    from fastapi import FastAPI

    from plugins.reid_ui import create_app

    parent = FastAPI()
    parent.mount("/reid", create_app(db_url=db_url))
    return parent


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright downloads no browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    """Wait for Airflow's api-server at ``base`` to answer its health check; fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"Airflow exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"api-server not healthy after {timeout:.0f}s:\n{log.read_text()[-4000:]}")
