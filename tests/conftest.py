"""Test-session setup: no GPU here, so Triton kernels run in the interpreter (must be set before import).

Database fixtures shared by tests/store and tests/jobs: `db_url` / `db` give a fresh database per test,
once on SQLite and once on PostgreSQL. PostgreSQL is TUNER_TEST_POSTGRES_URL when set (its tuner tables are
dropped before each test), else a private server this test run starts from Debian's `postgresql` package and
stops at the end. Without those binaries the PostgreSQL variants are skipped, unless
TUNER_TEST_REQUIRE_POSTGRES=1 (CI sets it), which makes that a failure.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tuner.store.db import Database

os.environ.setdefault("TRITON_INTERPRET", "1")

# Several tests press Ctrl-C (SIGINT) on the processes they start. A test run started in the background by a
# non-interactive shell (`cmd &`) inherits SIGINT *ignored*, and every process it starts would ignore Ctrl-C too;
# give this process Python's handler so that its children start with the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("TUNER_TEST_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (TUNER_TEST_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL database for this test run (see the module docstring)."""
    configured = os.environ.get("TUNER_TEST_POSTGRES_URL", "")
    if configured:
        yield configured
        return
    from postgres_server import find_postgres_bin, running_postgres

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _skip_or_fail("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("the PostgreSQL driver is not installed: pip install -e '.[postgres]'")
    assert bin_dir is not None
    with running_postgres(bin_dir) as url:
        yield url


def _reset_postgres(url: str) -> None:
    from tuner.store.db import create_store_engine, normalize_url
    from tuner.store.models import Base

    engine = create_store_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A URL of an empty database: a SQLite file in tmp_path, or the test run's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'tuner.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    from tuner.store.db import open_database

    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'data' / 'tuner.db'}"
