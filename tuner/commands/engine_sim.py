"""`tuner engine-sim ...`: run the simulated SGLang server; every argument is forwarded unchanged
to `python -m tuner.runtime.sim` (see docs/parts/engine-sim.md and `tuner engine-sim --help`).
"""

from __future__ import annotations

import argparse

from tuner.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    # prefix_chars="+" makes this parser treat every "--flag" as a plain argument, so all of them reach
    # the simulator's own parser (including -h/--help, which then lists the simulator's flags).
    parser = subparsers.add_parser(
        "engine-sim",
        prefix_chars="+",
        add_help=False,
        help="run a simulated SGLang server (same flags, HTTP API and metrics; no GPU)",
        description="Forwards all arguments to the simulated SGLang server; see `tuner engine-sim --help`.",
    )
    parser.add_argument("sim_args", nargs="*", help="simulator flags, e.g. --model-path GLM-4.7-FP8 --tp 8")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.runtime.sim.server import main

    return main(list(args.sim_args))
