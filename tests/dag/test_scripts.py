"""The Airflow setup scripts: shell syntax, and the pools they create (one per device, 1 slot)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

SCRIPTS = ["airflow_env.sh", "setup_airflow.sh", "demo.sh", "airflow_standalone.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_shell_syntax(name):
    proc = subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pools_for_configured_devices():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "airflow_pools.py"),
            *("--hosts", "npu-a: 0,1", "--hosts", "npu-b: 0,2", "--device-ids", "0,1,2"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    pools = json.loads(proc.stdout)
    assert sorted(pools) == ["ascend310_devices", "cpu_bench"]
    assert pools["ascend310_devices"]["slots"] == 4 and pools["cpu_bench"]["slots"] == 1  # device 0 twice: 2 hosts
    assert all(p["include_deferred"] is False and p["description"] for p in pools.values())


def test_env_script_defaults_to_the_checkout(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    show = "echo $AIRFLOW_HOME $AIRFLOW__CORE__DAGS_FOLDER $AIRFLOW__CORE__LOAD_EXAMPLES"
    cmd = f"source {ROOT}/scripts/airflow_env.sh && {show}"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == [f"{ROOT}/.airflow", f"{ROOT}/dags", "False"]
    custom = dict(env, AIRFLOW_HOME=str(tmp_path / "af"))
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=custom, check=True).stdout.split()
    assert out[0] == str(tmp_path / "af")
