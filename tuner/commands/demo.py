"""`tuner demo`: the main job on the embedded defaults: the demo flag search (tuner/search/flags/demo.py) of
GLM-4.7-FP8 TP8 on the simulated H200 engine, stored in the default SQLite database. A thin preset over
`tuner flag-search`."""

from __future__ import annotations

import argparse

from tuner.search.flags.demo import demo_argv
from tuner.settings import Settings

DEMO_FLAG_SEARCH_ARGS: tuple[str, ...] = tuple(demo_argv())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a short flag search against the simulated engine (no GPU needed)",
        description="Equivalent to `tuner flag-search " + " ".join(DEMO_FLAG_SEARCH_ARGS) + " --out <data dir>/demo`; "
        "extra arguments are passed on to flag-search (e.g. `tuner demo --trials 30`). Re-running resumes the study.",
    )
    p.set_defaults(func=run, accepts_extra=True, extra=[])


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.cli import build_parser

    out_dir = settings.data_dir / "demo"
    argv = ["flag-search", *DEMO_FLAG_SEARCH_ARGS, "--out", str(out_dir), *args.extra]
    print("tuner " + " ".join(argv))
    fs_args = build_parser().parse_args(argv)
    return int(fs_args.func(fs_args, settings) or 0)
