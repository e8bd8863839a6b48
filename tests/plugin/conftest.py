"""Plugin tests: a real Airflow simple auth manager (real JWTs), a seeded SQLite results database, and
the /reid app mounted the way Airflow mounts plugin apps.

Airflow reads AIRFLOW_HOME and its metadata DB URL when first imported, so they are only defaulted
here (another test area may have set them first); the auth settings are read on every use and are
set for this session. The metadata DB is migrated because token validation checks revoked tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # plugin_seed
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the plugins package, as `python -m pytest` from the root gives

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="reid-plugin-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from plugin_support import USERS, auth_env, mounted, write_passwords  # noqa: E402 - after the env defaults above


@pytest.fixture(scope="session")
def auth_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Airflow's SimpleAuthManager, initialised as the api-server does, over a migrated metadata DB."""
    passwords = write_passwords(tmp_path_factory.mktemp("auth") / "passwords.json")
    mp = pytest.MonkeyPatch()
    for key, value in auth_env(passwords).items():
        mp.setenv(key, value)
    from airflow import settings

    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": str(settings.SQL_ALCHEMY_CONN)}
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    from airflow.api_fastapi.app import init_auth_manager

    manager = init_auth_manager()
    assert type(manager).__name__ == "SimpleAuthManager", type(manager)
    yield manager
    mp.undo()


@pytest.fixture(scope="session")
def tokens(auth_manager: Any) -> dict[str, str]:
    """A JWT per user, issued by the simple auth manager's login service (password checked)."""
    from airflow.api_fastapi.auth.managers.simple.datamodels.login import LoginBody
    from airflow.api_fastapi.auth.managers.simple.services.login import SimpleAuthManagerLogin

    return {
        u: SimpleAuthManagerLogin.create_token(body=LoginBody(username=u, password=pw)) for u, (_, pw) in USERS.items()
    }


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from plugin_seed import seed

    url = f"sqlite:///{tmp_path_factory.mktemp('results') / 'results.sqlite'}"
    return {"url": url, **seed(url)}


@pytest.fixture
def results_db(tmp_path: Path) -> dict[str, Any]:
    """A fresh seeded database for tests that change it (acknowledging alerts)."""
    from plugin_seed import seed

    url = f"sqlite:///{tmp_path / 'results.sqlite'}"
    return {"url": url, **seed(url)}


@pytest.fixture
def client(auth_manager: Any, seeded_db: dict[str, Any]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(mounted(seeded_db["url"]), follow_redirects=False) as c:
        yield c


@pytest.fixture
def rw_client(auth_manager: Any, results_db: dict[str, Any]) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(mounted(results_db["url"]), follow_redirects=False) as c:
        yield c
