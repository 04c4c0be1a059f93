"""The `tuner` command line: a thin layer that parses flags and calls the same functions the service uses.

Each subcommand lives in `tuner/commands/<name>.py` with `register(subparsers)` and `run(args, settings)`.
TunerError is printed as a one-line message (exit 2); anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tuner.errors import TunerError
from tuner.settings import Settings

# module name in tuner.commands -> imported lazily, so `tuner --help` does not import torch
COMMANDS: tuple[str, ...] = (
    "demo",
    "kernel_sweep",
    "flag_search",
    "export",
    "models",
    "db",
    "bench",
    "engine_sim",
    "worker",
    "status",
    "workload",
    "watch",
    "suffix_replay",
    "serve",
)


LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _load_command_modules() -> list:
    modules = []
    for name in COMMANDS:
        try:
            modules.append(importlib.import_module(f"tuner.commands.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name == f"tuner.commands.{name}":
                continue  # command not built yet
            if exc.name and not exc.name.startswith("tuner"):
                # a third-party dependency of one command is missing: the other commands still work
                modules.append(_missing_dependency_command(name, exc.name))
                continue
            raise
    return modules


def _missing_dependency_command(name: str, package: str):  # type: ignore[no-untyped-def]
    import types

    def run(args, settings):  # type: ignore[no-untyped-def]
        raise TunerError(f"`tuner {name.replace('_', '-')}` needs the Python package {package!r}: "
                         f"pip install {package} (or reinstall tuner with its dependencies)")

    def register(sub):  # type: ignore[no-untyped-def]
        p = sub.add_parser(name.replace("_", "-"), help=f"(unavailable: {package} is not installed)")
        p.set_defaults(func=run)

    return types.SimpleNamespace(register=register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Observability-driven autotuner for LLM inference serving.",
    )
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $TUNER_DATABASE_URL or a SQLite "
                        "file in the data folder)")
    parser.add_argument("--data-dir", help="data folder (default: $TUNER_DATA_DIR or ~/.local/share/tuner)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: $TUNER_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _load_command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "accepts_extra", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra  # a preset command (demo) passes them on to the command it wraps
    settings = Settings.from_env().with_overrides(
        database_url=args.database_url, data_dir=args.data_dir, log_level=args.log_level
    )
    level = settings.log_level.strip().upper()
    if level not in LOG_LEVELS:
        source = "--log-level" if args.log_level is not None else "TUNER_LOG_LEVEL"
        print(f"tuner: error: {source} {settings.log_level!r} is not a log level; use one of "
              f"{', '.join(LOG_LEVELS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args, settings) or 0)
    except TunerError as exc:
        print(f"tuner: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tuner: interrupted; everything measured so far is saved.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
