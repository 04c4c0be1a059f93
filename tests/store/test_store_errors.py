"""Opening a database that cannot work gives a DatabaseError that says what to fix."""

from __future__ import annotations

import sys

import pytest

from tuner.errors import DatabaseError
from tuner.store.db import open_database


@pytest.mark.parametrize("url", ["not a url", "", "sqlite//missing-colon.db"])
def test_malformed_url(url: str) -> None:
    with pytest.raises(DatabaseError, match="URL"):
        open_database(url)


def test_unknown_database_kind() -> None:
    with pytest.raises(DatabaseError, match="unknown database kind 'oracle9000'"):
        open_database("oracle9000://user@host/db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://user:secret@127.0.0.1:5432/tuner",
        "postgresql://user:secret@127.0.0.1:5432/tuner",
    ],
)
def test_missing_postgres_driver(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes `import psycopg` fail even where it is installed.
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    with pytest.raises(DatabaseError, match=r"pip install psycopg\[binary\]") as excinfo:
        open_database(url)
    assert "secret" not in str(excinfo.value)  # passwords never reach messages


def test_unreachable_server() -> None:
    pytest.importorskip("psycopg")
    # port 1 on localhost: nothing listens there
    with pytest.raises(DatabaseError, match=r"cannot reach the database server.*is running") as excinfo:
        open_database("postgresql+psycopg://user:secret@127.0.0.1:1/tuner?connect_timeout=3")
    assert "secret" not in str(excinfo.value)


def test_sqlite_folder_that_cannot_be_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseError, match="cannot create the folder"):
        open_database(f"sqlite:///{blocker / 'sub' / 'tuner.db'}")


def test_file_that_is_not_a_sqlite_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tuner.db"
    path.write_bytes(b"this is some text file, certainly not SQLite " * 200)
    with pytest.raises(DatabaseError, match="is not a SQLite database"):
        open_database(f"sqlite:///{path}")


def test_a_truncated_sqlite_file_gets_the_same_advice_as_a_corrupt_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tuner.store.db import row_counts

    path = tmp_path / "tuner.db"
    open_database(f"sqlite:///{path}").dispose()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a copy cut short
    with pytest.raises(DatabaseError, match="is not a SQLite database, or a damaged one.*move it away"), \
            open_database(f"sqlite:///{path}") as db:
        row_counts(db)
