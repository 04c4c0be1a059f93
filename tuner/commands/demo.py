"""`tuner demo`: the main job on the embedded defaults: the demo flag search (tuner/search/flags/demo.py) of
GLM-4.7-FP8 TP8 on the simulated H200 engine, stored in the default SQLite database. A thin preset over
`tuner flag-search`; with `--serve` (what `make demo` runs) the same search is queued in the tuning service, to
watch in the browser."""

from __future__ import annotations

import argparse

from tuner.jobs.demo import DEMO_FLAG_SEARCH_ARGS
from tuner.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    from tuner.service.config import DEFAULT_PORT

    p = sub.add_parser(
        "demo",
        help="run a short flag search against the simulated engine (no GPU needed); --serve: in the web UI",
        description="Equivalent to `tuner flag-search " + " ".join(DEMO_FLAG_SEARCH_ARGS) + " --out <data dir>/demo`; "
        "extra arguments are passed on to flag-search (e.g. `tuner demo --trials 30`). Re-running resumes the study. "
        "With --serve, starts `tuner serve` on localhost with this search queued and prints its URL; Ctrl-C stops "
        "everything.",
    )
    p.add_argument("--serve", action="store_true", help="queue the search in the tuning service and serve the web UI")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"--serve: port (default {DEFAULT_PORT})")
    p.set_defaults(func=run, accepts_extra=True, extra=[])


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.serve:
        return serve_demo(args, settings)
    from tuner.cli import build_parser

    out_dir = settings.data_dir / "demo"
    argv = ["flag-search", *DEMO_FLAG_SEARCH_ARGS, "--out", str(out_dir), *args.extra]
    print("tuner " + " ".join(argv))
    fs_args = build_parser().parse_args(argv)
    return int(fs_args.func(fs_args, settings) or 0)


def serve_demo(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.jobs import kinds
    from tuner.jobs.demo import demo_flag_search_request
    from tuner.service.config import ServiceConfig
    from tuner.service.server import serve

    request = demo_flag_search_request(args.extra)  # a bad extra option fails here, before anything starts
    config = ServiceConfig(database_url=settings.resolved_database_url, port=args.port, cpu_workers=1)

    def queue(db) -> None:  # type: ignore[no-untyped-def]
        job = kinds.get_kind("flag_search").submit(db.url, request)
        print(f"demo flag search queued: job #{job.id} ({job.state}); watch it at {config.url}#/job/{job.id}")

    serve(config, before_start=queue, log_dir=settings.data_dir / "logs" / "service")
    return 0
