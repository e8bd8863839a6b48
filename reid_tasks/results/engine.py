"""The results database connection: engines, transactions and the retry policy of writes.

SQLite runs in WAL mode with a busy timeout and takes the write lock at the start of a write transaction
(BEGIN IMMEDIATE), so concurrent writers queue instead of failing; "database is locked" after the timeout,
and PostgreSQL deadlock / serialization failures, are retried by the store (``is_retryable``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from ..errors import ResultsError
from . import migrate as _migrate
from .urls import redact, resolve_url, sqlite_path

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
_RETRIES = 8


def is_retryable(exc: DBAPIError) -> bool:
    """A lock timeout (SQLite) or a deadlock / serialization failure (PostgreSQL): worth another try."""
    if isinstance(exc, OperationalError) and "database is locked" in str(exc.orig):
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    else:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        if path is not None:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the lock up front: no deadlock-prone read->write upgrade inside a transaction.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'IMMEDIATE')}")

    return engine


def make_engine(url: str) -> Engine:
    """An Engine for a results database URL (already resolved); SQLite gets WAL, busy timeout, BEGIN IMMEDIATE."""
    backend = url.split(":", 1)[0].split("+", 1)[0]
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    raise ResultsError(f"unsupported results database {redact(url)!r}: use postgresql:// or sqlite:///")


class Database:
    """An open results database: its engine, the dialect's INSERT (for upserts), one-transaction reads and
    writes. ``ResultsStore`` adds the rows; create one with ``ResultsStore.open``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read_bind = engine.execution_options(sqlite_begin="DEFERRED")
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - make_engine refuses these
            raise ResultsError(f"unsupported database dialect {engine.dialect.name!r}")
        self._insert = insert

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, url: str | None = None, *, cfg: Any = None, migrate: bool | None = None) -> Self:
        """Open the results database at ``url`` (resolved: explicit > config > env > Airflow > SQLite).

        ``migrate``: None = upgrade SQLite automatically, require other databases to be at the head revision
        (ResultsError telling to run ``reid-validate db upgrade`` otherwise); True = upgrade any database;
        False = never upgrade.
        """
        resolved = resolve_url(url, cfg)
        engine = make_engine(resolved)
        try:
            auto = engine.dialect.name == "sqlite" if migrate is None else migrate
            _migrate.ensure_schema(engine, auto=auto)
        except ResultsError:
            engine.dispose()
            raise
        except DBAPIError as exc:
            engine.dispose()
            raise ResultsError(f"cannot open results database {redact(resolved)}: {exc.orig}") from exc
        return cls(engine)

    @property
    def url(self) -> str:
        """The database URL with the password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------------ transactions
    def _write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn`` in one write transaction, retrying lock timeouts / deadlocks."""
        for attempt in range(_RETRIES):
            try:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    return fn(session)
            except DBAPIError as exc:
                if not is_retryable(exc) or attempt == _RETRIES - 1:
                    raise ResultsError(f"results database write failed ({self.url}): {exc.orig}") from exc
                delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
                log.warning("results database busy (%s); retry %d in %.2fs", exc.orig, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, fn: Callable[[Session], T]) -> T:
        try:
            with Session(self._read_bind, expire_on_commit=False) as session, session.begin():
                return fn(session)
        except DBAPIError as exc:
            raise ResultsError(f"results database read failed ({self.url}): {exc.orig}") from exc
