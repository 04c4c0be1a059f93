"""Command-line options shared by the commands that launch an engine and send a workload
(`tuner bench`, `tuner flag-search`): one definition, so the two never drift apart."""

from __future__ import annotations

import argparse
from typing import Any

WORKLOADS = ("random", "shared-prefix", "multi-turn", "trace")


def positive_or_inf(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or inf)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_workload_arguments(g: argparse._ArgumentGroup) -> None:
    """The workload's shape (what each request looks like), not how fast it is sent."""
    g.add_argument("--workload", choices=WORKLOADS, default="random")
    g.add_argument("--input-len", type=int, default=1024, help="prompt tokens (default 1024)")
    g.add_argument("--output-len", type=int, default=128, help="tokens to generate (default 128)")
    g.add_argument("--range-ratio", type=float, default=1.0,
                   help="lengths uniform in [len*ratio, len] (1.0 = fixed; bench_serving's default is 0)")
    g.add_argument("--prefix-fraction", type=float, default=0.5, help="shared-prefix: shared share of input")
    g.add_argument("--num-groups", type=int, default=4, help="shared-prefix: distinct prefixes")
    g.add_argument("--turns", type=int, default=4, help="multi-turn: turns per session")
    g.add_argument("--system-len", type=int, default=1024, help="multi-turn: system prompt tokens")
    g.add_argument("--turn-input-len", type=int, default=256, help="multi-turn: tool-result tokens per turn")
    g.add_argument("--think-time", type=float, default=0.0, help="multi-turn: seconds between turns")
    g.add_argument("--trace", help="trace: JSONL file (timestamp, input_len or prompt, output_len)")


def add_sending_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--endpoint", choices=("chat", "completions", "generate"),
                   help="API to call (default: chat for multi-turn, completions otherwise)")
    g.add_argument("--num-warmup", type=int, default=2, help="warm-up requests after launch, not measured (default 2)")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request (default 600)")


def add_engine_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--sim-gpu", default="H200", help="sim: GPU to simulate (default H200)")
    g.add_argument("--time-scale", type=float, default=1.0,
                   help="sim: run this many times faster; SLOs and rates stay in engine time")
    g.add_argument("--engine-python", help="sglang: interpreter with sglang installed (default: this one)")
    g.add_argument("--vllm-executable", default="vllm", help="vllm: the vllm command (default: on PATH)")
    g.add_argument("--ready-timeout", type=float, help="seconds to wait for /health (default 1800; sim 120)")
    g.add_argument("--log-dir", help="engine logs (default: <data dir>/logs)")
    g.add_argument("--no-check-flags", action="store_true",
                   help="do not check flags against the engine's --help before launching")


def engine_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The engine adapter's constructor options from the options `add_engine_arguments` defines."""
    if args.engine == "sim":
        return {"gpu": args.sim_gpu, "time_scale": args.time_scale, "seed": args.seed}
    if args.engine == "sglang" and args.engine_python:
        return {"python": args.engine_python}
    if args.engine == "vllm":
        return {"executable": args.vllm_executable}
    return {}
