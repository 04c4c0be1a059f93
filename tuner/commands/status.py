"""`tuner status`: every job's progress and the live workers, from any host sharing the database."""

from __future__ import annotations

import argparse

from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show jobs, their units' progress, and live workers with their heartbeats")
    p.add_argument("--all", action="store_true", help="also jobs that finished, failed or were cancelled")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.jobs.status import status_lines
    from tuner.store.db import open_database

    db = open_database(settings.resolved_database_url)
    try:
        for line in status_lines(db, include_ended=args.all):
            print(line)
    finally:
        db.dispose()
    return 0
