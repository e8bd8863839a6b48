"""Fixtures of the DAG tests: the DAG parsed from dags/ (no database), and an Airflow home with a
migrated SQLite metadata database for ``dag.test()`` runs (in a subprocess, so this pytest process's
Airflow settings stay untouched)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
DAG_FILE = DAGS / "reid_validation.py"
DAG_ID = "reid_validation"

# Airflow reads its configuration when first imported: give this process a throwaway home before that.
_HOME = Path(tempfile.mkdtemp(prefix="reid-dag-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a subprocess using the Airflow home ``home`` (SQLite) and this checkout's DAG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(home / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        REID_SCHEDULE="none",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def run_py(
    code_or_file: str | Path, env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    cmd = (
        [sys.executable, str(code_or_file), *args]
        if isinstance(code_or_file, Path)
        else [sys.executable, "-c", code_or_file, *args]
    )
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> Any:
    """The last line of ``stdout`` that parses as JSON (the runners print their result last)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result in output:\n{stdout[-4000:]}")


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS), known_pools=set(setup_pools()) | {"default_pool"})


@pytest.fixture(scope="session")
def dag(dagbag):
    assert not dagbag.import_errors, dagbag.import_errors
    d = dagbag.dags.get(DAG_ID)  # get_dag() would query the metadata DB
    assert d is not None, f"{DAG_ID} not found in {DAGS}"
    return d


@pytest.fixture(scope="session")
def dag_module():
    """The DAG file as a module (for its helper functions)."""
    spec = importlib.util.spec_from_file_location("reid_validation_dag_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setup_pools() -> dict[str, dict]:
    """The pools scripts/setup_airflow.sh creates for the default config."""
    spec = importlib.util.spec_from_file_location("airflow_pools_under_test", ROOT / "scripts" / "airflow_pools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from reid_tasks.config import load_config

    return module.pools(load_config())


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Airflow home with a migrated SQLite metadata DB and the project's pools."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(home)
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pools = home / "pools.json"
    pools.write_text(json.dumps(setup_pools()))
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "import", str(pools)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield home


def run_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """``airflow_env`` for a ``dag.test()`` run whose data and results database live under ``tmp``."""
    return airflow_env(
        home, REID_DATA_DIR=str(tmp / "data"), REID_RESULTS_DB_URL=f"sqlite:///{tmp / 'results.sqlite'}", **extra
    )


def quick_conf(target: str, dataset_root: Path, checkpoint: Path) -> dict[str, Any]:
    """A trigger conf validating ``target`` at one batch size with one timed pass (the smallest real run)."""
    return {
        "targets": [target],
        "batch_sizes": [2],
        "dataset_root": str(dataset_root),
        "checkpoint": str(checkpoint),
        "config_overrides": ["VALIDATION.BENCH.REPEATS 1"],
    }
