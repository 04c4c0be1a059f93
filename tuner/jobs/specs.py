"""The options of the jobs that launch an engine (`tuner bench`, `tuner flag-search`), declared once as frozen
dataclasses: the CLI derives its arguments from them (tuner.jobs.fields) and a request body is the same
fields as JSON. Each request turns itself into the runtime and search objects that do the work.

Defaults shared by both jobs live here once: the endpoint per workload, the ready timeout per engine, the
log folder, the prompt text per engine. Nothing here parses argv or prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import JobError, TunerError
from tuner.jobs.fields import option
from tuner.paths import writable_folder
from tuner.settings import Settings

ENGINES = ("sim", "sglang", "vllm")
WORKLOADS = ("random", "shared-prefix", "multi-turn", "trace")
LEARNED = "learned:"  # a workload learned by `tuner workload learn`, by name
ENDPOINTS = ("chat", "completions", "generate")
# How long to wait for /health after launch, per engine: the simulator is up in seconds, so a minute or two
# means it is stuck; a real engine loading hundreds of GB of weights and capturing CUDA graphs can take
# tens of minutes.
READY_TIMEOUT_S: Mapping[str, float] = {"sim": 120.0, "sglang": 1800.0, "vllm": 1800.0}


def positive_or_inf(text: str) -> float:
    """A positive number or inf, from the command line."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (or inf)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


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


def parse_assignments(items: tuple[str, ...] | list[str] | None, what: str, *, typed: bool) -> dict[str, Any]:
    """KEY=VALUE items -> a mapping (values read by `parse_flag_value` when `typed`)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TunerError(f"{what} {item!r} is not KEY=VALUE (e.g. chunked-prefill-size=4096)")
        out[key.strip()] = parse_flag_value(value) if typed else value
    return out


@dataclass(frozen=True, kw_only=True)
class ServingRequest:
    """What every job that launches an engine and sends it a workload is told: the engine, the model, the
    shape of the requests, how they are sent, and how the engine is started."""

    engine: str = option(help="inference engine", choices=ENGINES)
    model: str = option(help="model path or hub id (for sim: a catalog model)")
    # the workload's shape (what each request looks like), not how fast it is sent
    workload: str = option("random", group="workload", metavar="|".join((*WORKLOADS, "learned:NAME")),
                           help="request shapes: a built-in kind, or learned:NAME, a workload learned from "
                                "production metrics by `tuner workload learn` (default random)")
    input_len: int = option(1024, group="workload", help="prompt tokens (default 1024)")
    output_len: int = option(128, group="workload", help="tokens to generate (default 128)")
    range_ratio: float = option(1.0, group="workload",
                                help="lengths uniform in [len*ratio, len] (1.0 = fixed; bench_serving's "
                                     "default is 0)")
    prefix_fraction: float = option(0.5, group="workload", help="shared-prefix: shared share of input")
    num_groups: int = option(4, group="workload", help="shared-prefix: distinct prefixes")
    turns: int = option(4, group="workload", help="multi-turn: turns per session")
    system_len: int = option(1024, group="workload", help="multi-turn: system prompt tokens")
    turn_input_len: int = option(256, group="workload", help="multi-turn: tool-result tokens per turn")
    think_time: float = option(0.0, group="workload", help="multi-turn: seconds between turns")
    trace: str | None = option(None, group="workload",
                               help="trace: JSONL file (timestamp, input_len or prompt, output_len)")
    endpoint: str | None = option(None, choices=ENDPOINTS, group="sending",
                                  help="API to call (default: chat for multi-turn, completions otherwise)")
    num_warmup: int = option(2, group="sending", help="warm-up requests after launch, not measured (default 2)")
    request_timeout: float = option(600.0, group="sending", help="seconds per request (default 600)")
    seed: int = option(0, group="sending", help="seeds prompts and arrivals (flag search: the sampler too)")
    sim_gpu: str = option("H200", group="engine", help="sim: GPU to simulate (default H200)")
    sim_sglang: str = option("0.5.23", choices=("0.5.23", "seed"), group="engine",
                             help="sim: SGLang flag surface to mimic: 0.5.23 (default) or seed (older "
                                  "spelling, with the forks' SUFFIX flags)")
    time_scale: float = option(1.0, group="engine",
                               help="sim: run this many times faster; SLOs and rates stay in engine time")
    engine_python: str | None = option(None, group="engine",
                                       help="sglang: interpreter with sglang installed (default: this one)")
    vllm_executable: str = option("vllm", group="engine", help="vllm: the vllm command (default: on PATH)")
    ready_timeout: float | None = option(None, group="engine",
                                         help="seconds to wait for /health (default 1800; sim 120)")
    log_dir: str | None = option(None, group="engine", help="engine logs (default: <data dir>/logs)")
    no_check_flags: bool = option(False, group="engine",
                                  help="do not check flags against the engine's --help before launching")

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS and not (self.workload.startswith(LEARNED) and self.workload[len(LEARNED):]):
            raise JobError(f"--workload {self.workload!r}: use one of {', '.join(WORKLOADS)} or {LEARNED}NAME")
        if self.workload == "trace" and not self.trace:
            raise JobError("--workload trace needs --trace FILE.jsonl")

    @property
    def engine_options(self) -> dict[str, Any]:
        """The engine adapter's constructor options."""
        if self.engine == "sim":
            options = {"gpu": self.sim_gpu, "time_scale": self.time_scale, "seed": self.seed}
            return {**options, "sglang": self.sim_sglang} if self.sim_sglang != "0.5.23" else options
        if self.engine == "sglang" and self.engine_python:
            return {"python": self.engine_python}
        if self.engine == "vllm":
            return {"executable": self.vllm_executable}
        return {}

    @property
    def ready_timeout_s(self) -> float:
        return self.ready_timeout or READY_TIMEOUT_S[self.engine]

    @property
    def endpoint_name(self) -> str:
        return self.endpoint or ("chat" if self.workload == "multi-turn" else "completions")

    def log_folder(self, settings: Settings) -> Path:
        """The engine-log folder, created and checked before anything launches (a run must not end with
        nowhere to put its log)."""
        if self.log_dir:
            return writable_folder(self.log_dir, "--log-dir")
        return writable_folder(settings.data_dir / "logs", "--data-dir's logs folder")

    def workload_for(self, settings: Settings | None = None) -> Callable[[int], Any]:
        """requests (multi-turn: sessions) -> the Workload. The simulator's tokenizer gives exact prompt
        lengths; real engines get words their tokenizers keep whole. `learned:NAME` is read from the store of
        `settings` (checked now: an unknown name is one clear line before anything launches)."""
        from tuner.runtime.loadgen.workloads import (
            MultiTurnAgentWorkload,
            RandomWorkload,
            SharedPrefixWorkload,
            TraceWorkload,
            default_text_source,
            fallback_make_text,
        )

        text = default_text_source() if self.engine == "sim" else fallback_make_text
        if self.workload.startswith(LEARNED):
            from tuner.runtime.loadgen.resolve import resolve_workload

            url = settings.resolved_database_url if settings is not None else None
            resolve_workload(self.workload, 1, database_url=url, text_source=text)  # fails fast on a bad name
            return lambda n: resolve_workload(self.workload, n, database_url=url, text_source=text)
        if self.workload == "random":
            return lambda n: RandomWorkload(n, self.input_len, self.output_len, self.range_ratio,
                                            text_source=text)
        if self.workload == "shared-prefix":
            return lambda n: SharedPrefixWorkload(n, self.input_len, self.output_len, self.prefix_fraction,
                                                  self.num_groups, text_source=text)
        if self.workload == "multi-turn":
            return lambda n: MultiTurnAgentWorkload(n, self.turns, self.system_len, self.input_len,
                                                    self.turn_input_len, self.output_len, self.think_time,
                                                    text_source=text)
        trace = str(self.trace)
        return lambda n: TraceWorkload(trace, max_requests=n, text_source=text)


@dataclass(frozen=True, kw_only=True)
class BenchRequest(ServingRequest):
    """`tuner bench`: one launch, one workload, client and engine figures side by side."""

    flag: tuple[str, ...] = option((), metavar="KEY=VALUE",
                                   help="engine flag, repeatable (chunked-prefill-size=4096, enable-foo=true, "
                                        "cuda-graph-bs=1,2,4, speculative-config.method=suffix)")
    env: tuple[str, ...] = option((), metavar="KEY=VALUE", help="environment variable for the engine")
    num_prompts: int = option(200, group="workload", help="requests to send (multi-turn: sessions) (default 200)")
    trace_speedup: float = option(1.0, group="workload", help="trace: replay this many times faster")
    request_rate: float | None = option(None, parse=positive_or_inf, group="sending",
                                        help="Poisson arrivals per second (default inf: all at once)")
    max_concurrency: int | None = option(None, group="sending", help="requests (sessions) in flight at most")
    max_duration: float | None = option(None, group="sending", help="stop the load after this many seconds")
    slo: str | None = option(None, group="sending",
                             help="e.g. ttft_p99<=2s,tpot_p99<=50ms (goodput counts requests meeting them)")

    def to_spec(self, settings: Settings) -> Any:
        """The runtime's BenchSpec (checks the log folder and every value first)."""
        from tuner.runtime.bench import BenchSpec
        from tuner.runtime.loadgen.arrivals import ConcurrencyArrivals, PoissonArrivals, TraceArrivals
        from tuner.runtime.loadgen.client import LoadOptions
        from tuner.runtime.loadgen.summary import parse_slos

        arrivals: Any
        workload = self.workload_for(settings)(self.num_prompts)
        timed = self.workload == "trace" or self.workload.startswith(LEARNED)  # sessions carry their arrival times
        if timed and self.request_rate is None:
            arrivals = TraceArrivals(self.trace_speedup, self.max_concurrency)
        elif self.request_rate is None and self.max_concurrency is not None:
            arrivals = ConcurrencyArrivals(self.max_concurrency)
        else:
            arrivals = PoissonArrivals(self.request_rate or math.inf, self.max_concurrency)
        load = LoadOptions(endpoint=self.endpoint_name, num_warmup=self.num_warmup,
                           request_timeout_s=self.request_timeout, max_duration_s=self.max_duration, seed=self.seed)
        return BenchSpec(
            engine=self.engine, model=self.model, workload=workload,
            arrivals=arrivals, load=load, flags=parse_assignments(self.flag, "--flag", typed=True),
            env=parse_assignments(self.env, "--env", typed=False), engine_options=self.engine_options,
            slos=parse_slos(self.slo), log_dir=self.log_folder(settings), ready_timeout_s=self.ready_timeout_s,
            check_flags=not self.no_check_flags,
        )


@dataclass(frozen=True, kw_only=True)
class FlagSearchRequest(ServingRequest):
    """`tuner flag-search`: one launch per candidate, the highest goodput under the SLOs."""

    model: str = option(help="model path or hub id (for sim: a model the simulator knows)")
    space: str | None = option(None, metavar="FILE.yaml", group="search space",
                               help="search space file (params, base_flags, ...)")
    preset: str | None = option(None, group="search space",
                                help="built-in space: sglang, sglang-eagle, sglang-suffix, vllm (default: "
                                     "sglang, or vllm for --engine vllm)")
    base_flag: tuple[str, ...] = option((), metavar="KEY=VALUE", group="search space",
                                        help="flag fixed for every trial, repeatable (tp-size=8)")
    base_env: tuple[str, ...] = option((), metavar="KEY=VALUE", group="search space",
                                       help="environment variable fixed for every trial, repeatable")
    slo: str | None = option(None, group="objective",
                             help="latency SLOs on client-side percentiles, e.g. 'ttft_p99<=2s,tpot_p99<=50ms'")
    objective: str = option("goodput", choices=("goodput", "goodput-req", "pareto"), group="objective",
                            help="goodput: output tok/s of requests meeting the SLOs (default); goodput-req: "
                                 "the same in requests/s; pareto: goodput vs --pareto-metric at light load")
    pareto_metric: str = option("tpot_p99", group="objective",
                                help="latency of the Pareto front (default tpot_p99)")
    sampler: str | None = option(None, choices=("tpe", "gp", "nsga2", "random"), group="objective",
                                 help="Optuna sampler (default tpe; nsga2 for --objective pareto)")
    local_search: float | None = option(None, metavar="SHARE", group="objective",
                                        help="chance (0-1) that the next trial changes one parameter of the best "
                                             "config so far, starting next to the engine's defaults (default 1 "
                                             "for tpe/gp: the sampler proposes when that neighbourhood is used "
                                             "up; 0 for random, nsga2 and pareto)")
    trials: int = option(20, group="objective", help="engine launches, the baseline included (default 20)")
    study: str | None = option(None, group="objective",
                               help="study name (default: derived from the options, so the same command resumes "
                                    "the same study)")
    repeats: int = option(3, group="objective",
                          help="load searches per re-measured candidate, for robust scores (default 3; 0: none)")
    top_k: int = option(3, group="objective", help="best candidates re-measured (default 3)")
    load_search: str = option("rate", choices=("rate", "concurrency"), group="maximum sustainable load",
                              help="search the request rate (Poisson arrivals) or the concurrency (default rate)")
    load_strategy: str = option("bisect", choices=("bisect", "step"), group="maximum sustainable load",
                                help="bisect: try the top, then halve the bracket; step: climb from the bottom")
    rate_min: float = option(0.5, parse=positive_or_inf, group="maximum sustainable load",
                             help="lowest load: req/s (engine time) or concurrency (default 0.5)")
    rate_max: float = option(32.0, parse=positive_or_inf, group="maximum sustainable load",
                             help="highest load; inf = everything at once (default 32)")
    requests_per_step: int = option(64, group="maximum sustainable load",
                                    help="requests per load step (default 64)")
    max_load_steps: int = option(6, group="maximum sustainable load", help="load steps per search (default 6)")
    load_tolerance: float = option(0.15, group="maximum sustainable load",
                                   help="stop bisecting when the bracket is this tight, relatively (default 0.15)")
    no_early_stop: bool = option(False, group="maximum sustainable load",
                                 help="let every load step run to the end even when its SLO is already lost")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.space and self.preset:
            raise JobError("give either --space or --preset, not both")

    def search_space(self) -> Any:
        """The checked space (file or preset) with the base flags and environment."""
        from tuner.search.flags.presets import preset_space
        from tuner.search.flags.space import load_space

        if self.space:
            space = load_space(Path(self.space).expanduser())
        else:
            space = preset_space(self.preset or ("vllm" if self.engine == "vllm" else "sglang"))
        family = "vllm" if self.engine == "vllm" else "sglang"
        if space.family != family:
            raise TunerError(f"the space {space.name!r} is for {space.family}, but --engine is {self.engine}")
        return space.with_base(parse_assignments(self.base_flag, "--base-flag", typed=True),
                               parse_assignments(self.base_env, "--base-env", typed=False))

    def to_study(self, settings: Settings, space: Any) -> tuple[Any, Any]:
        """(StudyConfig, TrialSettings) of this search. Unless --no-check-flags, every flag the space can set
        must be one the engine lists (read from its --help) before anything is launched."""
        from tuner.runtime.engines import get_engine
        from tuner.runtime.launcher import read_flag_surface
        from tuner.runtime.loadgen.client import LoadOptions
        from tuner.search.flags.load_search import LoadSearchConfig
        from tuner.search.flags.objective import Objective, parse_slo_text
        from tuner.search.flags.space import check_engine_accepts
        from tuner.search.flags.study import StudyConfig
        from tuner.search.flags.trial import TrialSettings

        objective = Objective(self.objective, parse_slo_text(self.slo), self.pareto_metric)
        load_search = LoadSearchConfig(
            mode=self.load_search, strategy=self.load_strategy, low=self.rate_min, high=self.rate_max,
            requests_per_step=self.requests_per_step, max_steps=self.max_load_steps,
            tolerance=self.load_tolerance, reference_step=self.objective == "pareto",
            early_stop=not self.no_early_stop)
        if not self.no_check_flags:
            engine = get_engine(self.engine, **self.engine_options)
            check_engine_accepts(space, engine, read_flag_surface(engine))
        make = self.workload_for(settings)
        workload = {k: v for k, v in make(1).describe().items()
                    if k not in ("num_prompts", "num_sessions", "max_requests")}
        load = LoadOptions(endpoint=self.endpoint_name, num_warmup=self.num_warmup,
                           request_timeout_s=self.request_timeout, seed=self.seed)
        trial_settings = TrialSettings(
            engine=self.engine, model=self.model, workload_for=make, workload=workload, objective=objective,
            load_search=load_search, load=load, engine_options=self.engine_options,
            log_dir=self.log_folder(settings), ready_timeout_s=self.ready_timeout_s, check_flags=False,
            seed=self.seed)
        parts = {"engine": self.engine, "model": self.model, "space": space.describe(),
                 "objective": objective.describe(), "workload": workload, "load": load_search.describe(),
                 "engine_options": self.engine_options, "endpoint": self.endpoint_name}
        config = StudyConfig(
            name=self.study or self._study_name(parts), engine=self.engine, model=self.model, space=space,
            objective=objective, load_search=load_search,
            workload={**workload, "endpoint": self.endpoint_name},
            sampler=self.sampler or ("nsga2" if self.objective == "pareto" else "tpe"),
            local_search=self.local_search, n_trials=self.trials, seed=self.seed, repeats=self.repeats,
            top_k=self.top_k, gpu=trial_settings.gpu,
            extra={"engine_options": self.engine_options, "time_scale": trial_settings.clock.scale})
        return config, trial_settings

    def _study_name(self, parts: dict[str, Any]) -> str:
        digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]
        model = self.model.rstrip("/").split("/")[-1]
        return f"{self.engine}-{model}-{parts['space']['name']}-{digest}"
