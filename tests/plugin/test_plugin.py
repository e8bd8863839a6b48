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


def test_results_db_url_order(monkeypatch):
    from plugins.reid_ui import results_db_url

    monkeypatch.delenv("REID_RESULTS_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_REID_RESULTS_DB", raising=False)
    assert results_db_url("sqlite:////tmp/explicit.sqlite") == "sqlite:////tmp/explicit.sqlite"
    assert results_db_url() is None  # the store's default (SQLite under the data directory)
    monkeypatch.setenv("AIRFLOW_CONN_REID_RESULTS_DB", "postgresql://u:p@db.example:5432/reid")
    assert results_db_url() == "postgresql+psycopg://u:p@db.example:5432/reid"
    monkeypatch.setenv("REID_RESULTS_DB_URL", "sqlite:////tmp/env.sqlite")
    assert results_db_url() is None  # REID_RESULTS_DB_URL wins; the store resolves it


def test_database_down_is_503_not_a_crash(auth_manager, tokens, tmp_path):
    from conftest import bearer, mounted
    from fastapi.testclient import TestClient

    url = "postgresql+psycopg://nobody:x@127.0.0.1:9/none?connect_timeout=2"
    with TestClient(mounted(url)) as c:
        r = c.get("/reid/api/results", headers=bearer(tokens["viewer"]))
    assert r.status_code == 503 and "results database unavailable" in r.json()["detail"]


@pytest.mark.parametrize("name", ["results.html", "alerts.html", "base.html"])
def test_templates_ship_with_the_package(name):
    assert (PLUGIN_DIR / "reid_ui" / "templates" / name).is_file()
