"""`tuner bench`: launch an engine, drive one workload against it, print client and engine figures side by
side, and store the run. Parses flags and prints; the work is tuner.runtime.bench.run_bench.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Any

from tuner.commands.common_args import (
    add_engine_arguments,
    add_sending_arguments,
    add_workload_arguments,
    engine_options_of,
    positive_or_inf,
)
from tuner.errors import DatabaseError, OutputPathError, TunerError
from tuner.paths import describe_os_error, writable_file, writable_folder
from tuner.settings import Settings


def parse_flag_value(text: str) -> Any:
    """'true'/'false' -> bool, 'none' -> None, numbers -> int/float, JSON lists/objects, '1,2,4' -> [1, 2, 4]
    (also floats); anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if text.strip().startswith(("[", "{")):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise TunerError(f"cannot read JSON value {text!r}: {exc}") from None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        for conv in (int, float):
            try:
                return [conv(p) for p in parts]
            except ValueError:
                pass
    return text


def parse_assignments(items: list[str] | None, what: str, *, typed: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TunerError(f"{what} {item!r} is not KEY=VALUE (e.g. chunked-prefill-size=4096)")
        out[key.strip()] = parse_flag_value(value) if typed else value
    return out


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "bench", help="launch an engine, send one workload, report client and engine metrics",
        description="Launch an engine with the given flags, warm it up, send a workload, scrape its "
                    "/metrics, tear it down, and print/store bench_serving-style figures.",
    )
    p.add_argument("--engine", required=True, choices=("sim", "sglang", "vllm"))
    p.add_argument("--model", required=True, help="model path or hub id (for sim: a catalog model)")
    p.add_argument("--flag", action="append", metavar="KEY=VALUE",
                   help="engine flag, repeatable (chunked-prefill-size=4096, enable-foo=true, "
                        "cuda-graph-bs=1,2,4, speculative-config.method=suffix)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable for the engine")
    g = p.add_argument_group("workload")
    add_workload_arguments(g)
    g.add_argument("--num-prompts", type=int, default=200,
                   help="requests to send (multi-turn: sessions) (default 200)")
    g.add_argument("--trace-speedup", type=float, default=1.0, help="trace: replay this many times faster")
    a = p.add_argument_group("arrivals and sending")
    a.add_argument("--request-rate", type=positive_or_inf,
                   help="Poisson arrivals per second (default inf: all at once)")
    a.add_argument("--max-concurrency", type=int, help="requests (sessions) in flight at most")
    add_sending_arguments(a)
    a.add_argument("--max-duration", type=float, help="stop the load after this many seconds")
    a.add_argument("--slo", help="e.g. ttft_p99<=2s,tpot_p99<=50ms (goodput counts requests meeting them)")
    a.add_argument("--seed", type=int, default=0)
    add_engine_arguments(p.add_argument_group("engine"))
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    o.add_argument("--no-store", action="store_true", help="do not record the run in the database")
    p.set_defaults(func=run)


def build_spec(args: argparse.Namespace, settings: Settings) -> Any:
    from tuner.runtime.bench import BenchSpec
    from tuner.runtime.loadgen.arrivals import ConcurrencyArrivals, PoissonArrivals, TraceArrivals
    from tuner.runtime.loadgen.client import LoadOptions
    from tuner.runtime.loadgen.summary import parse_slos
    from tuner.runtime.loadgen.workloads import (
        MultiTurnAgentWorkload,
        RandomWorkload,
        SharedPrefixWorkload,
        TraceWorkload,
        default_text_source,
        fallback_make_text,
    )

    # The simulator's tokenizer gives exact prompt lengths; real engines get words tokenizers keep whole.
    text = default_text_source() if args.engine == "sim" else fallback_make_text
    workload: Any
    if args.workload == "random":
        workload = RandomWorkload(args.num_prompts, args.input_len, args.output_len, args.range_ratio,
                                  text_source=text)
    elif args.workload == "shared-prefix":
        workload = SharedPrefixWorkload(args.num_prompts, args.input_len, args.output_len,
                                        args.prefix_fraction, args.num_groups, text_source=text)
    elif args.workload == "multi-turn":
        workload = MultiTurnAgentWorkload(args.num_prompts, args.turns, args.system_len, args.input_len,
                                          args.turn_input_len, args.output_len, args.think_time,
                                          text_source=text)
    else:
        if not args.trace:
            raise TunerError("--workload trace needs --trace FILE.jsonl")
        workload = TraceWorkload(args.trace, max_requests=args.num_prompts, text_source=text)

    arrivals: Any
    if args.workload == "trace" and args.request_rate is None:
        arrivals = TraceArrivals(args.trace_speedup, args.max_concurrency)
    elif args.request_rate is None and args.max_concurrency is not None:
        arrivals = ConcurrencyArrivals(args.max_concurrency)
    else:
        arrivals = PoissonArrivals(args.request_rate or math.inf, args.max_concurrency)

    endpoint = args.endpoint or ("chat" if args.workload == "multi-turn" else "completions")
    load = LoadOptions(endpoint=endpoint, num_warmup=args.num_warmup, request_timeout_s=args.request_timeout,
                       max_duration_s=args.max_duration, seed=args.seed)
    engine_options = engine_options_of(args)
    ready_timeout = args.ready_timeout or (120.0 if args.engine == "sim" else 1800.0)
    # checked before anything launches: a run must not end with nowhere to put its log
    if args.log_dir:
        log_dir = writable_folder(args.log_dir, "--log-dir")
    else:
        log_dir = writable_folder(settings.data_dir / "logs", "--data-dir's logs folder")
    return BenchSpec(
        engine=args.engine, model=args.model, workload=workload, arrivals=arrivals, load=load,
        flags=parse_assignments(args.flag, "--flag", typed=True),
        env=parse_assignments(args.env, "--env", typed=False),
        engine_options=engine_options, slos=parse_slos(args.slo), log_dir=log_dir,
        ready_timeout_s=ready_timeout, check_flags=not args.no_check_flags,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tuner.runtime.bench import run_bench
    from tuner.runtime.report import print_bench_result

    for noisy in ("httpx", "httpcore"):  # one INFO line per request would bury the table
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))

    spec = build_spec(args, settings)
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
