"""The /reid app under the FAB auth manager (what docker/ deploys): a Viewer reads but cannot acknowledge,
a User acknowledges, an anonymous caller is refused. Real FAB users in a migrated SQLite metadata DB, real
logins through FAB's /auth/token, in a subprocess (this session's auth manager is the simple one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_support import JWT_SECRET

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
USERS = [("viewer", "Viewer", "viewer-pw-1"), ("operator", "User", "operator-pw-2")]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def fab(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("fab-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__AUTH_MANAGER=FAB_AUTH_MANAGER,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API_AUTH__JWT_SECRET=JWT_SECRET,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]),
    )
    _run(["-m", "airflow", "db", "migrate"], env)  # FAB's tables included
    for user, role, password in USERS:
        create = ["users", "create", "--username", user, "--password", password, "--role", role]
        _run(["-m", "airflow", *create, "--email", f"{user}@example.org", "--firstname", user, "--lastname", "T"], env)
    done = _run([str(HERE / "fab_auth_check.py"), f"sqlite:///{home / 'results.sqlite'}"], env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fab_logins(fab):
    assert fab["auth_manager"] == "FabAuthManager"
    assert fab["login_viewer"] == fab["login_operator"] == 201
    assert fab["login_wrong_password"] in (400, 401)


def test_anonymous_is_refused(fab):
    assert fab["anonymous_api"] == 401 and fab["anonymous_ack"] == 401
    status, location = fab["anonymous_page"]
    assert status == 302 and location.startswith("/auth/login")  # FAB's login page


def test_viewer_reads_but_cannot_acknowledge(fab):
    assert fab["viewer_read"][0] == 200 and fab["viewer_read"][1] > 0
    assert fab["viewer_page"] == 200
    status, detail = fab["viewer_ack"]
    assert status == 403 and "may not edit runs of DAG reid_validation" in detail
    assert fab["open_after_viewer"] == 2  # nothing was acknowledged


def test_user_role_acknowledges(fab):
    assert fab["operator_ack"] == [200, "operator"]
