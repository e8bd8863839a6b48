"""Where the results database is.

Order: explicit URL (``--db``) > ``VALIDATION.RESULTS_DB_URL`` of the config > ``$REID_RESULTS_DB_URL`` >
Airflow connection ``reid_results_db`` > ``sqlite:///<data dir>/results.sqlite``. ``postgres://`` and
``postgresql://`` become ``postgresql+psycopg://`` (psycopg 3).

The Airflow connection is looked up by default only inside an Airflow task (``AIRFLOW_CTX_DAG_ID`` set);
``resolve_url(airflow=True)`` looks it up whenever Airflow is importable (the /reid plugin in the
api-server, which is no task), ``airflow=False`` never. A connection that does not exist falls through to
SQLite; any other failure to read it is a ResultsError (results must not silently go to a local file).
"""

from __future__ import annotations

import importlib
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


def _not_found_errors() -> tuple[type[BaseException], ...]:
    """Airflow's 'connection not found' exception classes (task SDK and core; usually the same class)."""
    found: list[type[BaseException]] = []
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):
        try:
            cls = importlib.import_module(module).AirflowNotFoundException
        except (ImportError, AttributeError):
            continue
        if cls not in found:
            found.append(cls)
    return tuple(found)


def _connection_getter(in_task: bool) -> Any:
    """``get(conn_id) -> Connection`` of the installed Airflow, or None when Airflow is not importable.

    In a task: the task SDK (through the supervisor). Elsewhere: ``Connection.get_connection_from_secrets``,
    which searches the server's secrets backends, the metastore included (the SDK's fallback chain outside a
    task skips the metastore); the SDK where only the task SDK is installed.
    """
    if not in_task:
        try:
            from airflow.models.connection import Connection  # type: ignore[import-not-found]

            return Connection.get_connection_from_secrets
        except ImportError:
            pass
    try:
        from airflow.sdk import BaseHook  # type: ignore[import-not-found]
    except ImportError:
        try:
            from airflow.hooks.base import BaseHook  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return None
    return BaseHook.get_connection


def airflow_connection_url(conn_id: str = AIRFLOW_CONN_ID, *, in_task: bool | None = None) -> str | None:
    """URI of the Airflow connection ``conn_id``; None when Airflow is not importable or the connection does
    not exist. ResultsError when it exists but cannot be read. ``in_task``: default ``in_airflow_task()``."""
    getter = _connection_getter(in_airflow_task() if in_task is None else in_task)
    if getter is None:
        return None
    try:
        conn = getter(conn_id)
    except _not_found_errors() as exc:  # the connection is optional
        log.debug("no Airflow connection %r: %s", conn_id, exc)
        return None
    except Exception as exc:
        raise ResultsError(f"cannot read Airflow connection {conn_id!r}: {type(exc).__name__}: {exc}") from exc
    uri = conn.get_uri() if conn is not None else None
    return uri or None


def default_sqlite_url(cfg: Any = None) -> str:
    from ..config import data_dir

    path = data_dir(cfg) / SQLITE_NAME
    return f"sqlite:///{path}"


def resolve_url(url: str | None = None, cfg: Any = None, *, airflow: bool | None = None) -> str:
    """The results database URL: ``url`` > ``cfg.VALIDATION.RESULTS_DB_URL`` > ``$REID_RESULTS_DB_URL`` >
    Airflow connection ``reid_results_db`` > SQLite in the data directory.

    ``airflow``: when to look up the connection: None = only inside an Airflow task, True = whenever
    Airflow is importable (e.g. the api-server), False = never.
    """
    if url:
        return normalize_url(url)
    cfg_url = getattr(getattr(cfg, "VALIDATION", None), "RESULTS_DB_URL", "") if cfg is not None else ""
    if cfg_url:
        return normalize_url(cfg_url)
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return normalize_url(env)
    if airflow if airflow is not None else in_airflow_task():
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
