"""The results database handle: URL checks, engine set-up (SQLite WAL + busy timeout), sessions and
transactions retried on lock timeouts. Opening (and migrating) one is db.py's `open_database`.

Every failure a user can fix (bad URL, missing driver, unreachable server, locked file) becomes a
`tuner.errors.DatabaseError` that says what to do. Knows nothing of tables, kernels or benches.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from tuner.errors import DatabaseError

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_S = 30.0  # how long SQLite waits for another writer before "database is locked"
DEFAULT_LOCK_RETRIES = 3  # further attempts of a whole transaction after a lock timeout
URL_EXAMPLES = "sqlite:////absolute/path/tuner.db or postgresql+psycopg://user:password@host:5432/tuner"
POSTGRES_DRIVER_HINT = (
    "pip install psycopg[binary] (or: pip install 'tuner[postgres]') and use a URL like "
    "postgresql+psycopg://user:password@host:5432/tuner"
)
# SQLite's words for a file that is not a database at all, and for one that is truncated or damaged
_CORRUPT_SIGNS = ("file is not a database", "file is encrypted", "database disk image is malformed")
_READ_ONLY = "tuner_read_only"  # execution option: a SQLite transaction that will not write (plain BEGIN)

T = TypeVar("T")


class Database:
    """An engine plus session factories for one database URL; open it with `open_database`."""

    def __init__(self, url: str, engine: Engine, *, lock_retries: int = DEFAULT_LOCK_RETRIES) -> None:
        self.url = url
        self.engine = engine
        self.lock_retries = lock_retries
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            bind=engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages and `tuner db info`."""
        return display_url(self.url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """A session that commits when the block ends and rolls back if it raises (Ctrl-C included).

        On SQLite the transaction takes the write lock up front (BEGIN IMMEDIATE), waiting up to the busy
        timeout for other writers; a lock that does not clear raises DatabaseError.
        """
        return self._translated(self._session(read_only=False))

    def read_session(self) -> contextlib.AbstractContextManager[Session]:
        """Like `session`, for blocks that only read: on SQLite it never waits for writers."""
        return self._translated(self._session(read_only=True))

    def connect(self, read_only: bool = True) -> contextlib.AbstractContextManager[Connection]:
        """A Core connection (for counts and migrations); read-only ones never take SQLite's write lock."""
        self._check_fork()
        engine = self.engine.execution_options(**{_READ_ONLY: True}) if read_only else self.engine
        return engine.connect()

    def transaction(
        self, work: Callable[[Session], T], *, read_only: bool = False, retry_conflicts: bool = False
    ) -> T:
        """Run `work(session)` in its own transaction, committed at the end; retried on a lock timeout.

        `retry_conflicts`: also retry once per attempt budget on a unique-key race (another writer inserted
        the same row between our SELECT and INSERT); `work` must then be safe to run again.
        """

        def attempt() -> T:
            with self._session(read_only=read_only) as session:
                return work(session)

        return self.retry_on_lock(attempt, retry_conflicts=retry_conflicts)

    def retry_on_lock(self, operation: Callable[[], T], *, retry_conflicts: bool = False) -> T:
        """Call `operation` (one whole transaction) again after transient lock errors; then DatabaseError."""
        tries = 0
        while True:
            try:
                return operation()
            except sa_exc.IntegrityError:
                if not retry_conflicts or tries >= self.lock_retries:
                    raise
            except sa_exc.DBAPIError as exc:
                if not is_transient(exc) or tries >= self.lock_retries:
                    raise translate_error(exc, self.url) from exc
                log.info("database busy (%s); retrying", _first_line(exc))
            tries += 1
            time.sleep(min(2.0, 0.05 * 2**tries) * random.uniform(0.5, 1.5))

    def dispose(self) -> None:
        """Close every pooled connection; the Database may not be used afterwards."""
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self, read_only: bool) -> Iterator[Session]:
        self._check_fork()
        session = (self._read_sessions if read_only else self._sessions)()
        try:
            yield session
            session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                session.rollback()
            raise
        finally:
            session.close()

    @contextlib.contextmanager
    def _translated(self, inner: contextlib.AbstractContextManager[Session]) -> Iterator[Session]:
        try:
            with inner as session:
                yield session
        except sa_exc.DBAPIError as exc:
            if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or _known_problem(exc):
                raise translate_error(exc, self.url) from exc
            raise

    def _check_fork(self) -> None:
        # A forked worker must not reuse the parent's pooled connections (SQLite and sockets alike).
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()


def normalize_url(url: str) -> str:
    """Check the URL's syntax; prefer psycopg 3 for a bare postgresql:// URL; expand ~ in SQLite paths."""
    if not url or not url.strip():
        raise DatabaseError(
            f"empty database URL: set TUNER_DATABASE_URL or --database-url, e.g. {URL_EXAMPLES}"
        )
    try:
        parsed = make_url(url.strip())
    except sa_exc.ArgumentError as exc:
        raise DatabaseError(f"not a database URL: {url!r}; expected e.g. {URL_EXAMPLES}") from exc
    if parsed.drivername == "postgresql" and _importable("psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    database = _sqlite_file(parsed)
    if database is not None and database.startswith("~"):
        parsed = parsed.set(database=str(Path(database).expanduser()))
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return url


def create_store_engine(url: str, *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> Engine:
    """An Engine for `url`; on SQLite with WAL, a busy timeout, foreign keys and real transactions."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, object] = {}
    if backend == "sqlite":
        kwargs["connect_args"] = {"timeout": busy_timeout_s}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except sa_exc.NoSuchModuleError as exc:
        raise DatabaseError(
            f"unknown database kind {parsed.drivername!r} in {display_url(url)}; use e.g. {URL_EXAMPLES}"
        ) from exc
    except ImportError as exc:
        if backend == "postgresql":
            hint = POSTGRES_DRIVER_HINT
        else:
            hint = f"install the Python driver for {parsed.drivername}, or use e.g. {URL_EXAMPLES}"
        raise DatabaseError(
            f"the database driver for {display_url(url)} is not installed ({exc}): {hint}"
        ) from exc
    except sa_exc.ArgumentError as exc:
        raise DatabaseError(
            f"bad database URL {display_url(url)}: {exc}; expected e.g. {URL_EXAMPLES}"
        ) from exc
    if backend == "sqlite":
        _install_sqlite_hooks(engine, busy_timeout_s)
    return engine


def is_transient(exc: sa_exc.DBAPIError) -> bool:
    """A lock timeout, deadlock or serialization failure: the same transaction may succeed if retried."""
    message = str(exc.orig).lower()
    if "database is locked" in message or "database table is locked" in message:
        return True
    return getattr(exc.orig, "sqlstate", None) in {"40001", "40P01", "55P03"}


def translate_error(exc: sa_exc.DBAPIError, url: str, *, connecting: bool = False) -> DatabaseError:
    """The DatabaseError a user sees for a driver error: what happened and what to do."""
    shown = display_url(url)
    message = _first_line(exc)
    lower = message.lower()
    sqlite_file = _sqlite_file(make_url(url)) if url else None
    if "database is locked" in lower or "database table is locked" in lower:
        return DatabaseError(
            f"the database {shown} is locked: another process holds a write lock and did not release it "
            "within the busy timeout. Wait for that process to finish (or stop it) and run again; to run "
            "several workers against one database, use PostgreSQL (TUNER_DATABASE_URL=postgresql+psycopg://...)."
        )
    if "unable to open database file" in lower:
        return DatabaseError(
            f"cannot open the SQLite file {sqlite_file}: check that its folder exists and is writable, "
            "or choose another database with --database-url / TUNER_DATABASE_URL."
        )
    if any(sign in lower for sign in _CORRUPT_SIGNS):
        return DatabaseError(
            f"{sqlite_file or shown} is not a SQLite database, or a damaged one ({message}): move it away or "
            "choose another file with --database-url / TUNER_DATABASE_URL."
        )
    if "readonly database" in lower or "read-only" in lower:
        return DatabaseError(f"the database {shown} is read-only: check the file's permissions ({message}).")
    if "disk is full" in lower or "no space left" in lower:
        return DatabaseError(f"the disk holding {shown} is full: free some space and run again ({message}).")
    if sqlite_file is None and (
        connecting or isinstance(exc, sa_exc.InterfaceError) or exc.connection_invalidated
    ):
        return DatabaseError(
            f"cannot reach the database server for {shown}: {message}. Check that the server is running and "
            "that host, port, user, password and database name in the URL are right."
        )
    return DatabaseError(f"database error on {shown}: {message}")


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float) -> None:
    busy_timeout_ms = max(0, int(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: object, _record: object) -> None:
        # Stop the sqlite3 module from managing transactions itself (it would run DDL outside any
        # transaction); `_on_begin` issues BEGIN instead.
        dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
            # In WAL mode NORMAL still survives a crash of the process; only a power cut may lose the
            # last commits. It makes the one-commit-per-measurement pattern cheap.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the lock at BEGIN, where the busy timeout applies; a deferred transaction that reads
        # and then writes can fail at once when another process committed in between.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def sqlite_file_of(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    database = _sqlite_file(make_url(url))
    return None if database is None else Path(database)


def create_sqlite_folder(url: str) -> None:
    database = _sqlite_file(make_url(url))
    if database is None:
        return
    folder = Path(database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"cannot create the folder {folder} for the SQLite database ({exc.strerror}); choose another "
            "place with --data-dir / TUNER_DATA_DIR or --database-url / TUNER_DATABASE_URL."
        ) from exc


def _sqlite_file(parsed: URL) -> str | None:
    """The file path of a SQLite URL, or None for in-memory / URI-style / non-SQLite URLs."""
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return database


def _known_problem(exc: sa_exc.DBAPIError) -> bool:
    lower = _first_line(exc).lower()
    return any(s in lower for s in (*_CORRUPT_SIGNS, "disk is full", "readonly"))


def _first_line(exc: sa_exc.DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
