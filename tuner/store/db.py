"""Opening the results database: connect (database.py), then migrate it to the newest schema (migrate.py).

Every failure a user can fix (bad URL, missing driver, unreachable server, locked file, a database newer than
this tuner) becomes a `tuner.errors.DatabaseError` that says what to do. Knows nothing of kernels or benches.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from tuner.store import migrate
from tuner.store.database import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_LOCK_RETRIES,
    Database,
    create_sqlite_folder,
    create_store_engine,
    display_url,
    normalize_url,
    sqlite_file_of,
    translate_error,
)
from tuner.store.flag_models import FLAG_TABLES
from tuner.store.models import TABLES

__all__ = ["Database", "create_store_engine", "display_url", "normalize_url", "open_database", "row_counts",
           "sqlite_file_of", "translate_error"]


def open_database(
    url: str,
    *,
    upgrade: bool = True,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    lock_retries: int = DEFAULT_LOCK_RETRIES,
) -> Database:
    """Open (and by default migrate to the newest schema) the database at `url`.

    A SQLite file's folder is created if missing. `upgrade=False` only connects (for `tuner db info`).
    `busy_timeout_s` / `lock_retries` exist for tests; the defaults suit several workers on one file.
    """
    url = normalize_url(url)
    create_sqlite_folder(url)
    engine = create_store_engine(url, busy_timeout_s=busy_timeout_s)
    db = Database(url, engine, lock_retries=lock_retries)
    try:
        with db.connect() as conn:  # reveals an unreachable server or a file that is not a database
            conn.exec_driver_sql("SELECT 1")
        if upgrade:
            migrate.upgrade(db)
    except sa_exc.DBAPIError as exc:
        engine.dispose()
        raise translate_error(exc, url, connecting=True) from exc
    except BaseException:
        engine.dispose()
        raise
    return db


def row_counts(db: Database) -> dict[str, int | None]:
    """Rows per table of the store; None for a table that does not exist (yet)."""
    counts: dict[str, int | None] = {}
    with db.connect() as conn:
        present = set(sa.inspect(conn).get_table_names())
        for table in TABLES + FLAG_TABLES:
            if table in present:
                counts[table] = conn.execute(
                    sa.select(sa.func.count()).select_from(sa.table(table))
                ).scalar_one()
            else:
                counts[table] = None
    return counts
