"""`tuner bench`: launch an engine, drive one workload against it, print client and engine figures side by
side, and store the run. Parses flags (declared by tuner.jobs.specs.BenchRequest) and prints; the work is
tuner.runtime.bench.run_bench.
"""

from __future__ import annotations

import argparse
import json
import logging

from tuner.errors import DatabaseError, OutputPathError
from tuner.jobs.fields import add_arguments, from_namespace
from tuner.jobs.specs import BenchRequest
from tuner.paths import describe_os_error, writable_file
from tuner.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "bench", help="launch an engine, send one workload, report client and engine metrics",
        description="Launch an engine with the given flags, warm it up, send a workload, scrape its "
                    "/metrics, tear it down, and print/store bench_serving-style figures.",
    )
    add_arguments(p, BenchRequest)
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    o.add_argument("--no-store", action="store_true", help="do not record the run in the database")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.runtime.bench import run_bench
    from tuner.runtime.report import print_bench_result

    for noisy in ("httpx", "httpcore"):  # one INFO line per request would bury the table
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    spec = from_namespace(BenchRequest, args).to_spec(settings)
    json_path = writable_file(args.json, "--json") if args.json else None
    db = None
    if not args.no_store:
        from tuner.store.db import open_database

        db = open_database(settings.resolved_database_url)
    try:
        result = run_bench(spec, db=db)
    finally:
        if db is not None:
            db.dispose()
    # the finished run comes first: printed and written before any storage error is reported
    print_bench_result(result)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise OutputPathError(f"cannot write --json {json_path}: {describe_os_error(exc)} "
                                  "(the result is printed above)") from None
    if result.store_error:
        raise DatabaseError(f"the run above was not stored: {result.store_error}")
    return 0 if result.ok else 1
