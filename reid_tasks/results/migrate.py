"""Alembic, configured in code: the scripts ship inside the package (works from an installed wheel).

Policy: a SQLite database (the embedded default) is created or upgraded to the head revision on first
use; any other database (PostgreSQL) is migrated only by ``reid-validate db upgrade`` (or
``ResultsStore.open(..., migrate=True)``), and opening one at another revision raises ResultsError saying
what to run. Migrations run in one transaction under a lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory transaction lock), so concurrent first users do not race.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from ..errors import ResultsError
from .urls import redact

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x52454944  # "REID"


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic Config with script_location inside the package (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships 0001
        raise ResultsError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision stamped in the database, None for a database without the schema."""
    return MigrationContext.configure(conn).get_current_revision()


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to ``revision``; returns the revision the database is at afterwards."""
    with engine.begin() as conn:
        _lock(conn)
        command.upgrade(alembic_config(conn), revision)
        return current_revision(conn)


def downgrade(engine: Engine, revision: str) -> str | None:
    """Downgrade to ``revision`` ('base' drops every table); returns the revision afterwards."""
    with engine.begin() as conn:
        _lock(conn)
        command.downgrade(alembic_config(conn), revision)
        return current_revision(conn)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn)


def ensure_schema(engine: Engine, *, auto: bool) -> None:
    """Make sure the database is at the head revision; upgrade it when ``auto``, else raise."""
    head = head_revision()
    with engine.connect() as conn:
        rev = current_revision(conn)
    if rev == head:
        return
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    where = redact(engine.url.render_as_string(hide_password=False))
    if rev is not None and rev not in known:
        raise ResultsError(
            f"results database {where} is at revision {rev!r}, unknown to this reid-validate (head {head!r}): "
            "it was migrated by a newer version"
        )
    if not auto:
        state = "has no results schema" if rev is None else f"is at revision {rev!r}"
        raise ResultsError(
            f"results database {where} {state}, this reid-validate needs {head!r}: "
            f"run `reid-validate db upgrade --db {where}`"
        )
    with engine.begin() as conn:
        _lock(conn)
        if current_revision(conn) != head:  # another process may have done it while we waited
            command.upgrade(alembic_config(conn), "head")
