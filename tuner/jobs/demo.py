"""The demo's flag search, declared once: `tuner demo` runs it in the terminal, `tuner demo --serve` (`make demo`)
queues it in the service, and the web UI's form can be filled with it. The search is data in
tuner/search/flags/demo.py (GLM-4.7-FP8 TP8 on the simulated H200 engine, no GPU needed)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tuner.jobs.fields import add_arguments, from_namespace
from tuner.jobs.specs import FlagSearchRequest
from tuner.search.flags.demo import demo_argv

DEMO_FLAG_SEARCH_ARGS: tuple[str, ...] = tuple(demo_argv())  # the search itself: tuner/search/flags/demo.py


def demo_flag_search_request(extra_args: Sequence[str] = ()) -> FlagSearchRequest:
    """The demo search's request; `extra_args` (flag-search options, e.g. ["--trials", "30"]) override it.
    A JobError/SystemExit-free one-line TunerError for an option flag-search does not know."""
    from tuner.errors import TunerError

    parser = argparse.ArgumentParser(prog="tuner demo", add_help=False, exit_on_error=False)
    add_arguments(parser, FlagSearchRequest, optional=("engine", "model"))
    try:
        args, unknown = parser.parse_known_args([*DEMO_FLAG_SEARCH_ARGS, *extra_args])
    except argparse.ArgumentError as exc:
        raise TunerError(f"tuner demo: {exc}") from None
    if unknown:
        raise TunerError(f"tuner demo: unknown flag-search option(s) {' '.join(unknown)}")
    return from_namespace(FlagSearchRequest, args)
