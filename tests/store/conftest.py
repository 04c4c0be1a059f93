"""Fixtures for the store tests: a fresh database per test, on SQLite and (when configured) PostgreSQL.

Set TUNER_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/tuner_test) to also run the
backend-independent tests on PostgreSQL; its tables are dropped before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tuner.store.db import Database, open_database

POSTGRES_URL = os.environ.get("TUNER_TEST_POSTGRES_URL", "")


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
    """A URL of an empty database: a SQLite file in tmp_path, or the test PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'tuner.db'}"
    if not POSTGRES_URL:
        pytest.skip("set TUNER_TEST_POSTGRES_URL to run this test on PostgreSQL")
    _reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'data' / 'tuner.db'}"
