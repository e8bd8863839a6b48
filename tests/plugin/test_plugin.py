"""The plugin as Airflow loads it: from the plugins folder and through the package's entry point."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "plugins"


def test_plugins_folder_loads_only_the_plugin_module(monkeypatch):
    """Airflow imports every .py of the folder; .airflowignore keeps reid_ui/ and __init__.py out of that."""
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory

    monkeypatch.syspath_prepend(str(PLUGIN_DIR))  # Airflow puts the plugins folder on sys.path
    before = set(sys.modules)
    try:
        plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGIN_DIR))
        assert errors == {}
        assert [p.name for p in plugins] == ["reid_results"]
        assert str(plugins[0].source) == "$PLUGINS_FOLDER/reid_results.py"
        from_folder = {
            name
            for name in set(sys.modules) - before
            if "." not in name and str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(PLUGIN_DIR))
        }
        assert from_folder == {"reid_results", "reid_ui"}, from_folder
    finally:
        for name in [m for m in sys.modules if m == "reid_results" or m.split(".")[0] == "reid_ui"]:
            del sys.modules[name]


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
    (view,) = ReidResultsPlugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert parsed.name == "ReID validation" and parsed.href == "/reid/" and parsed.destination == "nav"


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
