"""Where the results database is.

Order: explicit URL (``--db``) > ``VALIDATION.RESULTS_DB_URL`` of the config > ``$REID_RESULTS_DB_URL`` >
Airflow connection ``reid_results_db`` (looked up only inside an Airflow task) >
``sqlite:///<data dir>/results.sqlite``. ``postgres://`` and ``postgresql://`` become
``postgresql+psycopg://`` (psycopg 3).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ResultsError

ENV_VAR = "REID_RESULTS_DB_URL"
AIRFLOW_CONN_ID = "reid_results_db"
SQLITE_NAME = "results.sqlite"

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """``postgres[ql]://`` -> ``postgresql+psycopg://``; other URLs unchanged (whitespace stripped)."""
    url = url.strip()
    if not url:
        raise ResultsError("empty results database URL")
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if "://" not in url:
        raise ResultsError(f"not a database URL (expected e.g. sqlite:///path or postgresql://...): {url!r}")
    return url


def in_airflow_task() -> bool:
    """True inside a running Airflow task (Airflow exports AIRFLOW_CTX_* to the task's environment)."""
    return bool(os.environ.get("AIRFLOW_CTX_DAG_ID"))


def airflow_connection_url(conn_id: str = AIRFLOW_CONN_ID) -> str | None:
    """URI of an Airflow connection, or None when Airflow or the connection does not exist."""
    try:
        from airflow.sdk import BaseHook  # type: ignore[import-not-found]
    except ImportError:
        try:
            from airflow.hooks.base import BaseHook  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return None
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends: the connection is optional
        log.debug("Airflow connection %r not usable: %s", conn_id, exc)
        return None
    uri = conn.get_uri()
    return uri or None


def default_sqlite_url(cfg: Any = None) -> str:
    from ..config import data_dir

    path = data_dir(cfg) / SQLITE_NAME
    return f"sqlite:///{path}"


def resolve_url(url: str | None = None, cfg: Any = None) -> str:
    """The results database URL (see the module docstring for the order)."""
    if url:
        return normalize_url(url)
    cfg_url = getattr(getattr(cfg, "VALIDATION", None), "RESULTS_DB_URL", "") if cfg is not None else ""
    if cfg_url:
        return normalize_url(cfg_url)
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return normalize_url(env)
    if in_airflow_task():
        conn_url = airflow_connection_url()
        if conn_url:
            return normalize_url(conn_url)
    return default_sqlite_url(cfg)


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
