"""Schema migrations of the results store, run programmatically with Alembic (no alembic.ini).

The migration scripts ship inside the package (`tuner/store/migrations`). This module only moves a database
to the newest revision and reports revisions; it never drops data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from tuner.errors import DatabaseError
from tuner.store.database import Database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
MIGRATION_LOCK_KEY = 0x7475_6E65_7200  # "tuner": PostgreSQL advisory lock held while migrating


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config pointing into the package; pass `url` for offline (--sql) use."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest schema revision this tuner knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, f"no migrations found in {MIGRATIONS_DIR}"
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(db: Database) -> str | None:
    """The revision the database is at; None for an empty database."""
    with db.connect(read_only=True) as conn:
        return _current_revision(conn)


def upgrade(db: Database) -> str:
    """Migrate `db` to the newest revision (a no-op when it is there already); returns that revision.

    Raises DatabaseError when the database is at a revision newer than this tuner knows.
    """
    head = head_revision()
    current = current_revision(db)
    if current == head:
        return head
    if current is not None and current not in known_revisions():
        raise DatabaseError(newer_revision_message(db, current, head))

    def run() -> None:
        # One transaction for the whole upgrade; on SQLite it holds the write lock, so a second process
        # opening the same fresh file waits, then finds the schema at head and does nothing.
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # PostgreSQL's counterpart of SQLite's write lock: one migrating process at a time.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    log.info("migrating database %s from revision %s to %s", db.display_url, current or "(empty)", head)
    try:
        db.retry_on_lock(run)
    except CommandError as exc:
        raise DatabaseError(f"cannot migrate the database {db.display_url}: {exc}") from exc
    return head


def newer_revision_message(db: Database, current: str, head: str) -> str:
    return (
        f"the database {db.display_url} is at schema revision {current!r}, which this tuner does not know "
        f"(its newest is {head!r}): a newer tuner wrote it. Upgrade tuner (pip install -U tuner), or point "
        "--database-url / TUNER_DATABASE_URL at another database."
    )


def _current_revision(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if rows else None
