"""The plugin as Airflow loads it: through the package's entry point, once."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "plugins"


LOAD_LIKE_THE_API_SERVER = """
import json
from airflow import plugins_manager
plugins_manager.get_fastapi_plugins()  # what airflow.api_fastapi.app.init_plugins calls
print(json.dumps({"plugins": [p["name"] for p in plugins_manager.get_plugin_info()],
                  "errors": plugins_manager.get_import_errors()}))
"""


@pytest.mark.parametrize("plugins_folder", ["default", "checkout"])
def test_plugins_load_once_without_import_errors(tmp_path, plugins_folder):
    """Plugins loaded as the api-server loads them, in the environment `make airflow` sets up: the entry
    point registers reid_results once; a plugins folder pointed at this checkout's plugins/ adds nothing."""
    import json
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "REID_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        REID_DATA_DIR=str(tmp_path / "data"),
        VENV_BIN=str(Path(sys.executable).parent),
    )
    if plugins_folder == "checkout":
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(PLUGIN_DIR)
    script = f'source "{ROOT}/scripts/airflow_env.sh" && exec python -c "$0"'
    done = subprocess.run(
        ["bash", "-c", script, LOAD_LIKE_THE_API_SERVER],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["errors"] == {}
    assert loaded["plugins"].count("reid_results") == 1, loaded


def test_plugins_folder_of_the_checkout_loads_nothing(monkeypatch):
    """.airflowignore keeps plugins/ inert as a plugins folder: the entry point is the one registration."""
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGIN_DIR))
    assert (plugins, errors) == ([], {})


def test_entry_point_class_is_a_valid_plugin():
    from airflow._shared.plugins_manager import is_valid_plugin
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, FastAPIAppResponse
    from fastapi import FastAPI

    from plugins.reid_results import ReidResultsPlugin

    assert is_valid_plugin(ReidResultsPlugin)
    (app,) = ReidResultsPlugin.fastapi_apps
    assert isinstance(app["app"], FastAPI) and app["url_prefix"] == "/reid"
    assert not any(app["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    FastAPIAppResponse.model_validate({**app, "app": "FastAPI"})
    nav, run_tab = (ExternalViewResponse.model_validate(v) for v in ReidResultsPlugin.external_views)
    assert nav.name == "ReID validation" and nav.href == "/reid/" and nav.destination == "nav"
    assert run_tab.destination == "dag_run" and run_tab.href == "/reid/runs/{DAG_ID}/{RUN_ID}"


def test_setup_cfg_registers_the_entry_point():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entry = cfg["options.entry_points"]["airflow.plugins"].strip()
    assert entry == "reid_results = plugins.reid_results:ReidResultsPlugin"


@pytest.fixture
def opened_urls(monkeypatch):
    """The URLs the plugin's StoreHolder opens (ResultsStore.open replaced by a recorder)."""
    from plugins.reid_ui import app as app_mod

    seen: list[str] = []

    class Recorder:
        @staticmethod
        def open(url):
            seen.append(url)
            return object()

    monkeypatch.setattr(app_mod, "ResultsStore", Recorder)
    for name in ("REID_RESULTS_DB_URL", "AIRFLOW_CONN_REID_RESULTS_DB", "AIRFLOW_CTX_DAG_ID"):
        monkeypatch.delenv(name, raising=False)
    return seen


def test_store_url_order_outside_a_task(monkeypatch, tmp_path, opened_urls):
    """The api-server is no Airflow task: the plugin still reads the connection (resolve_url(airflow=True))."""
    from plugins.reid_ui.app import StoreHolder

    monkeypatch.setenv("REID_DATA_DIR", str(tmp_path))
    StoreHolder(None).get()  # no connection: SQLite under the data directory
    StoreHolder("sqlite:////tmp/explicit.sqlite").get()
    monkeypatch.setenv("AIRFLOW_CONN_REID_RESULTS_DB", "postgresql://u:p@db.example:5432/reid")
    StoreHolder(None).get()
    StoreHolder("sqlite:////tmp/explicit.sqlite").get()
    monkeypatch.setenv("REID_RESULTS_DB_URL", "sqlite:////tmp/env.sqlite")
    StoreHolder(None).get()
    assert opened_urls == [
        f"sqlite:///{tmp_path / 'results.sqlite'}",
        "sqlite:////tmp/explicit.sqlite",
        "postgresql+psycopg://u:p@db.example:5432/reid",
        "sqlite:////tmp/explicit.sqlite",
        "sqlite:////tmp/env.sqlite",
    ]


def test_store_url_from_a_connection_in_the_metastore(auth_manager, opened_urls):
    """A connection created in the Airflow UI lives in the metastore, which the task SDK's lookup outside a
    task does not search; the plugin finds it."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    from plugins.reid_ui.app import StoreHolder

    with create_session() as session:
        session.add(Connection(conn_id="reid_results_db", uri="postgresql://meta:pw@metastore-host:5433/reid"))
    try:
        StoreHolder(None).get()
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "reid_results_db").delete()
    assert opened_urls == ["postgresql+psycopg://meta:pw@metastore-host:5433/reid"]


def test_database_down_is_503_not_a_crash(auth_manager, tokens, tmp_path):
    from fastapi.testclient import TestClient
    from plugin_support import bearer, mounted

    url = "postgresql+psycopg://nobody:x@127.0.0.1:9/none?connect_timeout=2"
    with TestClient(mounted(url)) as c:
        r = c.get("/reid/api/results", headers=bearer(tokens["viewer"]))
    assert r.status_code == 503 and "results database unavailable" in r.json()["detail"]


@pytest.mark.parametrize("name", ["results.html", "alerts.html", "base.html"])
def test_templates_ship_with_the_package(name):
    assert (PLUGIN_DIR / "reid_ui" / "templates" / name).is_file()
