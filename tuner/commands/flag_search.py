"""`tuner flag-search`: search an engine's server flags for the highest goodput under latency SLOs, one
engine launch per candidate, results in the database (Optuna study included) and a report folder.
Parses flags and prints; the work is tuner.search.flags.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from tuner.commands.common_args import (
    add_engine_arguments,
    add_sending_arguments,
    add_workload_arguments,
    engine_options_of,
    positive_or_inf,
)
from tuner.errors import TunerError
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
    p.add_argument("--engine", choices=("sim", "sglang", "vllm"))
    p.add_argument("--model", help="model path or hub id (for sim: a model the simulator knows)")
    s = p.add_argument_group("search space")
    s.add_argument("--space", metavar="FILE.yaml", help="search space file (params, base_flags, ...)")
    s.add_argument("--preset", help="built-in space: sglang, sglang-eagle, sglang-suffix, vllm "
                                    "(default: sglang, or vllm for --engine vllm)")
    s.add_argument("--base-flag", action="append", metavar="KEY=VALUE",
                   help="flag fixed for every trial, repeatable (tp-size=8)")
    s.add_argument("--base-env", action="append", metavar="KEY=VALUE",
                   help="environment variable fixed for every trial, repeatable")
    s.add_argument("--show-space", action="store_true", help="print the checked space and exit")
    o = p.add_argument_group("objective")
    o.add_argument("--slo", help="latency SLOs on client-side percentiles, e.g. 'ttft_p99<=2s,tpot_p99<=50ms'")
    o.add_argument("--objective", choices=("goodput", "goodput-req", "pareto"), default="goodput",
                   help="goodput: output tok/s of requests meeting the SLOs (default); goodput-req: the same "
                        "in requests/s; pareto: goodput vs --pareto-metric at light load")
    o.add_argument("--pareto-metric", default="tpot_p99", help="latency of the Pareto front (default tpot_p99)")
    o.add_argument("--sampler", choices=("tpe", "gp", "nsga2", "random"), default=None,
                   help="Optuna sampler (default tpe; nsga2 for --objective pareto)")
    o.add_argument("--local-search", type=float, metavar="SHARE",
                   help="chance (0-1) that the next trial changes one parameter of the best config so far, "
                        "starting next to the engine's defaults (default 1 for tpe/gp: the sampler proposes "
                        "when that neighbourhood is used up; 0 for random, nsga2 and pareto)")
    o.add_argument("--trials", type=int, default=20, help="engine launches, the baseline included (default 20)")
    o.add_argument("--study", help="study name (default: derived from the options, so the same command "
                                   "resumes the same study)")
    o.add_argument("--seed", type=int, default=0, help="seeds the sampler, prompts and arrivals")
    o.add_argument("--repeats", type=int, default=3,
                   help="load searches per re-measured candidate, for robust scores (default 3; 0: none)")
    o.add_argument("--top-k", type=int, default=3, help="best candidates re-measured (default 3)")
    w = p.add_argument_group("workload")
    add_workload_arguments(w)
    add_sending_arguments(w)
    ls = p.add_argument_group("maximum sustainable load (within one launch per candidate)")
    ls.add_argument("--load-search", choices=("rate", "concurrency"), default="rate",
                    help="search the request rate (Poisson arrivals) or the concurrency (default rate)")
    ls.add_argument("--load-strategy", choices=("bisect", "step"), default="bisect",
                    help="bisect: try the top, then halve the bracket; step: climb from the bottom")
    ls.add_argument("--rate-min", type=positive_or_inf, default=0.5,
                    help="lowest load: req/s (engine time) or concurrency (default 0.5)")
    ls.add_argument("--rate-max", type=positive_or_inf, default=32.0,
                    help="highest load; inf = everything at once (default 32)")
    ls.add_argument("--requests-per-step", type=int, default=64, help="requests per load step (default 64)")
    ls.add_argument("--max-load-steps", type=int, default=6, help="load steps per search (default 6)")
    ls.add_argument("--load-tolerance", type=float, default=0.15,
                    help="stop bisecting when the bracket is this tight, relatively (default 0.15)")
    ls.add_argument("--no-early-stop", action="store_true",
                    help="let every load step run to the end even when its SLO is already lost")
    add_engine_arguments(p.add_argument_group("engine"))
    r = p.add_argument_group("output")
    r.add_argument("--out", help="report folder (default: <data dir>/flag-search/<study>)")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------

def build_space(args: argparse.Namespace) -> Any:
    from tuner.commands.bench import parse_assignments
    from tuner.search.flags.presets import preset_space
    from tuner.search.flags.space import load_space

    if args.space and args.preset:
        raise TunerError("give either --space or --preset, not both")
    if args.space:
        space = load_space(Path(args.space).expanduser())
    else:
        space = preset_space(args.preset or ("vllm" if args.engine == "vllm" else "sglang"))
    family = "vllm" if args.engine == "vllm" else "sglang"
    if space.family != family:
        raise TunerError(f"the space {space.name!r} is for {space.family}, but --engine is {args.engine}")
    return space.with_base(parse_assignments(args.base_flag, "--base-flag", typed=True),
                           parse_assignments(args.base_env, "--base-env", typed=False))


def workload_factory(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(requests per step -> Workload, description)."""
    from tuner.runtime.loadgen.workloads import (
        MultiTurnAgentWorkload,
        RandomWorkload,
        SharedPrefixWorkload,
        TraceWorkload,
    )

    if args.workload == "random":
        def make(n: int) -> Any:
            return RandomWorkload(n, args.input_len, args.output_len, args.range_ratio)
    elif args.workload == "shared-prefix":
        def make(n: int) -> Any:
            return SharedPrefixWorkload(n, args.input_len, args.output_len, args.prefix_fraction,
                                        args.num_groups)
    elif args.workload == "multi-turn":
        def make(n: int) -> Any:
            return MultiTurnAgentWorkload(n, args.turns, args.system_len, args.input_len, args.turn_input_len,
                                          args.output_len, args.think_time)
    else:
        if not args.trace:
            raise TunerError("--workload trace needs --trace FILE.jsonl")

        def make(n: int) -> Any:
            return TraceWorkload(args.trace, max_requests=n)
    return make, {k: v for k, v in make(1).describe().items() if k not in ("num_prompts", "num_sessions",
                                                                          "max_requests")}


def _study_name(args: argparse.Namespace, parts: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]
    model = args.model.rstrip("/").split("/")[-1]
    return f"{args.engine}-{model}-{parts['space']['name']}-{digest}"


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
    space = build_space(args)
    if args.show_space:
        print(json.dumps(space.describe(), indent=2, default=str))
        return 0
    config, settings_trial = build_config(args, settings, space)
    db = open_database(settings.resolved_database_url)
    try:
        return search(db, config, settings_trial, args, settings)
    finally:
        db.dispose()


def build_config(args: argparse.Namespace, settings: Settings, space: Any) -> tuple[Any, Any]:
    from tuner.runtime.engines import get_engine
    from tuner.runtime.launcher import read_supported_flags
    from tuner.runtime.loadgen.client import LoadOptions
    from tuner.search.flags.load_search import LoadSearchConfig
    from tuner.search.flags.objective import Objective, parse_slo_text
    from tuner.search.flags.space import check_supported
    from tuner.search.flags.study import StudyConfig
    from tuner.search.flags.trial import TrialSettings

    objective = Objective(args.objective, parse_slo_text(args.slo), args.pareto_metric)
    load_search = LoadSearchConfig(
        mode=args.load_search, strategy=args.load_strategy, low=args.rate_min, high=args.rate_max,
        requests_per_step=args.requests_per_step, max_steps=args.max_load_steps, tolerance=args.load_tolerance,
        reference_step=args.objective == "pareto", early_stop=not args.no_early_stop)
    engine_options = engine_options_of(args)
    if not args.no_check_flags:
        # Every flag the space can set must be one the engine lists, before anything is launched.
        check_supported(space, read_supported_flags(get_engine(args.engine, **engine_options)))
    make, workload = workload_factory(args)
    endpoint = args.endpoint or ("chat" if args.workload == "multi-turn" else "completions")
    load = LoadOptions(endpoint=endpoint, num_warmup=args.num_warmup, request_timeout_s=args.request_timeout,
                       seed=args.seed)
    trial_settings = TrialSettings(
        engine=args.engine, model=args.model, workload_for=make, workload=workload, objective=objective,
        load_search=load_search, load=load, engine_options=engine_options,
        log_dir=Path(args.log_dir).expanduser() if args.log_dir else settings.data_dir / "logs",
        ready_timeout_s=args.ready_timeout or (120.0 if args.engine == "sim" else 1800.0),
        check_flags=False, seed=args.seed)
    parts = {"engine": args.engine, "model": args.model, "space": space.describe(),
             "objective": objective.describe(), "workload": workload, "load": load_search.describe(),
             "engine_options": engine_options, "endpoint": endpoint}
    sampler = args.sampler or ("nsga2" if args.objective == "pareto" else "tpe")
    config = StudyConfig(
        name=args.study or _study_name(args, parts), engine=args.engine, model=args.model, space=space,
        objective=objective, load_search=load_search, workload={**workload, "endpoint": endpoint},
        sampler=sampler, local_search=args.local_search, n_trials=args.trials, seed=args.seed,
        repeats=args.repeats, top_k=args.top_k,
        gpu=trial_settings.gpu, extra={"engine_options": engine_options,
                                       "time_scale": trial_settings.clock.scale})
    return config, trial_settings


def search(db: Any, config: Any, trial_settings: Any, args: argparse.Namespace, settings: Settings) -> int:
    from tuner.search.flags.report import load_report, render_summary, write_report
    from tuner.search.flags.study import run_study
    from tuner.search.flags.trial import EngineEvaluator

    print(f"study {config.name!r} in {db.display_url} ({config.sampler}, {config.n_trials} launches, SLOs "
          f"{', '.join(str(s) for s in config.objective.slos)})")
    for note in config.space.notes:
        print(f"  note: {note}")
    run_study(db, config, EngineEvaluator(trial_settings, log=print))
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
        best = (s.result or {}).get("best")
        best_text = f"best {best['median']:.1f} tok/s (trial {best['trial']})" if best else "no result yet"
        gain = (s.result or {}).get("gain")
        gain_text = f", {gain['ratio'] * 100:+.1f}% vs baseline" if gain else ""
        print(f"{s.name}: {s.engine} {s.model} on {s.gpu or '-'} [{s.sampler}, {s.status}] "
              f"{', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}; {best_text}{gain_text}")
    return 0
