"""Fixtures of the results tests: SQLite files and a throwaway PostgreSQL database.

PostgreSQL: 127.0.0.1:5432 (user postgres, else root; trust auth). One database per test session, dropped
at the end; every test gets its own empty schema in it (search_path in the URL) and migrates it. Tests on
PostgreSQL are skipped, with the reason, only when the server is unreachable.
"""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reid_tasks.results import ResultsStore, RuleConfig

# results_helpers must be importable by name in spawned writer processes, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))

PG_HOST = os.environ.get("REID_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("REID_TEST_PG_PORT", "5432"))


class PgServer:
    """One throwaway database per test session; each test gets its own schema in it (fast to create)."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.dbname = f"reid_results_{uuid.uuid4().hex[:10]}"
        self._n = itertools.count()

    def _admin(self, dbname: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=self.user, dbname=dbname, autocommit=True)

    def create_database(self) -> None:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def drop_database(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')

    def new_schema(self) -> str:
        """URL of a fresh, empty schema (first on the search_path of every connection made with it)."""
        schema = f"t{next(self._n)}"
        with self._admin(self.dbname) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"postgresql+psycopg://{self.user}@{PG_HOST}:{PG_PORT}/{self.dbname}?options=-csearch_path%3D{schema}"


def _connect_pg() -> tuple[PgServer | None, str]:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return None, f"psycopg not importable: {exc}"
    errors = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return PgServer(user), ""
        except psycopg.Error as exc:
            errors.append(f"{user}: {str(exc).strip()}")
    return None, f"PostgreSQL at {PG_HOST}:{PG_PORT} unreachable ({'; '.join(errors)})"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server, reason = _connect_pg()
    if server is None:
        pytest.skip(reason)
    server.create_database()
    try:
        yield server
    finally:
        server.drop_database()


@pytest.fixture
def empty_pg_url(pg_server: PgServer) -> str:
    """A fresh, empty PostgreSQL schema (no tables) in the session's throwaway database."""
    return pg_server.new_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A migrated results database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.sqlite'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_schema()


@pytest.fixture
def store(db_url: str) -> Iterator[ResultsStore]:
    s = ResultsStore.open(db_url, migrate=True)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def rule_cfg() -> RuleConfig:
    """The product defaults (VALIDATION.RULES / REFERENCE)."""
    return RuleConfig.from_cfg()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    return request.getfixturevalue("empty_pg_url")
