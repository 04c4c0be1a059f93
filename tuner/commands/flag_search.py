"""`tuner flag-search`: search an engine's server flags for the highest goodput under latency SLOs, one
engine launch per candidate, results in the database (Optuna study included) and a report folder.
Parses flags (declared by tuner.jobs.specs.FlagSearchRequest) and prints; the work is tuner.search.flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.jobs.fields import add_arguments, from_namespace
from tuner.jobs.specs import FlagSearchRequest
from tuner.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "flag-search", help="search server flags for the best goodput under latency SLOs",
        description="Search an engine's server flags (Optuna, one launch per candidate) for the highest "
                    "goodput whose client-side p99 latencies meet the SLOs; the maximum sustainable load "
                    "of each candidate is found within its one launch. The study is stored in the "
                    "database (optuna-dashboard works on the same URL); re-running the same command "
                    "resumes it.")
    p.add_argument("--list", action="store_true", help="list the flag studies in the database and exit")
    p.add_argument("--show-space", action="store_true", help="print the checked space and exit")
    add_arguments(p, FlagSearchRequest, optional=("engine", "model"))
    r = p.add_argument_group("output")
    r.add_argument("--out", help="report folder (default: <data dir>/flag-search/<study>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.store.db import open_database

    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.list:
        db = open_database(settings.resolved_database_url)
        try:
            return list_studies(db)
        finally:
            db.dispose()
    if not args.engine or not args.model:
        raise TunerError("tuner flag-search needs --engine and --model (or --list)")
    request = from_namespace(FlagSearchRequest, args)
    space = request.search_space()
    if args.show_space:
        print(json.dumps(space.describe(), indent=2, default=str))
        return 0
    if request.log_dir is None:  # this command's data folder (--data-dir), not the worker's default
        request = dataclasses.replace(request, log_dir=str(request.log_folder(settings)))
    config, _ = request.to_study(settings, space)
    db = open_database(settings.resolved_database_url)
    try:
        return search(db, request, config, args, settings)
    finally:
        db.dispose()


def search(db: Any, request: FlagSearchRequest, config: Any, args: argparse.Namespace, settings: Settings) -> int:
    """Submit the flag_search job and run it here with a local worker (the service runs the same job on its
    workers), then print the summary and write the report."""
    from tuner.jobs import flag_search
    from tuner.jobs.kinds import WorkerContext, handler_for
    from tuner.jobs.worker import work
    from tuner.search.flags.report import load_report, render_summary, write_report

    print(f"study {config.name!r} in {db.display_url} ({config.sampler}, {config.n_trials} launches, SLOs "
          f"{', '.join(str(s) for s in config.objective.slos)})")
    for note in config.space.notes:
        print(f"  note: {note}")
    url = settings.resolved_database_url
    job = flag_search.persist(url, request, config)
    work(url, handler_for(WorkerContext(url, print_fn=print)), job_ids=[job.id], raise_errors=True)
    report = load_report(db, config.name)
    print(render_summary(report))
    if report.best is None:
        return 1
    out = Path(args.out).expanduser() if args.out else settings.data_dir / "flag-search" / config.name
    for path in write_report(report, out, force=True):
        print(f"wrote {path}")
    print(f"dashboard: optuna-dashboard {db.display_url}  (the same database URL, password included)")
    return 0


def list_studies(db: Any) -> int:
    from tuner.store.flags import list_studies as stored
    from tuner.store.flags import trial_counts

    studies = stored(db)
    if not studies:
        print("no flag studies yet")
        return 0
    for s in studies:
        counts = trial_counts(db, s.id)
        best = s.result.best if s.result is not None else None
        best_text = f"best {best.score.median:.1f} tok/s (trial {best.trial})" if best else "no result yet"
        gain = s.result.gain if s.result is not None else None
        gain_text = f", {gain.ratio * 100:+.1f}% vs baseline" if gain else ""
        print(f"{s.name}: {s.engine} {s.model} on {s.gpu or '-'} [{s.sampler}, {s.status}] "
              f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}; {best_text}{gain_text}")
    return 0
