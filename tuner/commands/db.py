"""`tuner db`: create or migrate the results database (`upgrade`), show where it is and its contents (`info`).

Only calls tuner.store; prints plain text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "db",
        help="create/migrate the results database, show its location and contents",
        description="Manage the results database (SQLite file by default, PostgreSQL via --database-url).",
    )
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION")
    actions.required = True
    actions.add_parser("upgrade", help="create the tables or migrate them to this tuner's schema revision")
    actions.add_parser(
        "info", help="print the database URL, its schema revision and row counts (changes nothing)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_action == "upgrade":
        return _upgrade(settings)
    return _info(settings)


def _upgrade(settings: Settings) -> int:
    from tuner.store import migrate
    from tuner.store.db import open_database

    url = settings.resolved_database_url
    db = open_database(url, upgrade=False)
    try:
        before = migrate.current_revision(db)
        head = migrate.upgrade(db)
    finally:
        db.dispose()
    if before == head:
        print(f"{db.display_url}: already at revision {head} (newest)")
    else:
        print(f"{db.display_url}: migrated from {before or '(empty)'} to revision {head}")
    return 0


def _info(settings: Settings) -> int:
    from tuner.store import migrate
    from tuner.store.db import display_url, normalize_url, open_database, row_counts, sqlite_file_of

    url = normalize_url(settings.resolved_database_url)
    head = migrate.head_revision()
    path = sqlite_file_of(url)
    print(f"url:       {display_url(url)}")
    if path is not None and not path.exists():
        print(f"revision:  none (no file yet: `tuner db upgrade` creates it); newest is {head}")
        return 0
    db = open_database(url, upgrade=False)
    try:
        current = migrate.current_revision(db)
        counts = row_counts(db)
    finally:
        db.dispose()
    if current is None:
        state = f"none (empty database; run `tuner db upgrade`); newest is {head}"
    elif current == head:
        state = f"{current} (newest)"
    elif current in migrate.known_revisions():
        state = f"{current} (older; `tuner db upgrade` migrates it to {head})"
    else:
        state = f"{current} (newer than this tuner, which knows up to {head}: upgrade tuner)"
    print(f"revision:  {state}")
    if path is not None:
        print(f"size:      {_file_size(path)}")
    print("rows:")
    width = max(len(name) for name in counts)
    for table, count in counts.items():
        print(f"  {table:<{width}}  {'-' if count is None else count:>10}")
    return 0


def _file_size(path: Path) -> str:
    size_bytes: float = sum(
        p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size_bytes < 1024 or unit == "GiB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    raise AssertionError("unreachable")
