"""One flag-search trial: validate -> launch -> ready -> warm-up -> measure (load search, one launch) ->
scrape -> teardown, every stage timed, with the engine's resolved args (/server_info), its log and the
metrics. Launch failures (OOM, CUDA graph capture, bad argument, timeout, crash) come back as an infeasible
outcome with the classified reason, never as an exception.

It knows nothing of Optuna or of the database: study.py records what this returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.errors import EngineError, TunerError
from tuner.runtime.engines import UnknownFlagError, get_engine, validate_flags
from tuner.runtime.launcher import EngineLaunchError, classify_failure, launch, read_supported_flags
from tuner.runtime.loadgen.client import LoadOptions, run_warmup_sync
from tuner.runtime.scraper import MetricsParseError
from tuner.runtime.stages import StageTimer
from tuner.search.flags.load_search import (
    EngineDied,
    EngineStepRunner,
    LoadSearchConfig,
    LoadSearchResult,
    WorkloadFactory,
    search_max_load,
)
from tuner.search.flags.objective import Clock, Objective
from tuner.search.flags.space import Candidate

STAGES = ("validate", "launch", "ready", "warmup", "measure", "scrape", "teardown")
# Kinds a config causes (the search learns from them) vs kinds of the environment (the trial is retried).
INFEASIBLE_KINDS = (
    "oom", "kv_cache", "cuda_graph", "invalid_argument", "timeout", "crash", "slo", "predicted_oom",
)
ENVIRONMENT_KINDS = ("port_in_use", "bad_metrics", "request_failed", "interrupted")
LOG_TAIL_LINES = 60


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a study shares. `engine_options` go to the engine's constructor (sim: gpu,
    time_scale, seed)."""

    engine: str
    model: str
    workload_for: WorkloadFactory
    workload: Mapping[str, Any]  # description, stored with results
    objective: Objective
    load_search: LoadSearchConfig
    load: LoadOptions = field(default_factory=LoadOptions)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    log_dir: Path = Path("logs")
    ready_timeout_s: float = 1800.0
    check_flags: bool = True
    teardown_grace_s: float = 15.0
    seed: int = 0

    @property
    def clock(self) -> Clock:
        return Clock(float(self.engine_options.get("time_scale", 1.0))) if self.engine == "sim" else Clock()

    @property
    def gpu(self) -> str | None:
        if self.engine == "sim":
            return f"{self.engine_options.get('gpu', 'H200')} (simulated)"
        from tuner.runtime.bench import detect_gpu_name

        return detect_gpu_name()


@dataclass(frozen=True)
class TrialOutcome:
    """status: ok (measured; `feasible` says whether some load met the SLOs), infeasible (the config
    failed: `failure_kind` says how) or failed (an environment problem, not the config's fault)."""

    status: str
    candidate: Candidate
    failure_kind: str | None = None
    error: str | None = None
    searches: tuple[LoadSearchResult, ...] = ()
    argv: tuple[str, ...] = ()
    engine_version: str | None = None
    server_info: Mapping[str, Any] | None = None
    log_path: str | None = None
    log_tail: str | None = None
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    never_ready: bool = False  # refused before launch, or the engine never answered /health

    @property
    def search(self) -> LoadSearchResult | None:
        return self.searches[0] if self.searches else None

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and self.search is not None and self.search.best is not None


def infeasible_kind(kind: str) -> bool:
    return kind in INFEASIBLE_KINDS


def run_trial(settings: TrialSettings, candidate: Candidate, *, repeats: int = 1,
              log: Any = None) -> TrialOutcome:
    """Launch `candidate`, run `repeats` load searches in that one launch (another seed each), tear down.

    Engine failures become an infeasible/failed TrialOutcome; the process group is gone when this returns,
    also on Ctrl-C (which is re-raised).
    """
    engine = get_engine(settings.engine, **dict(settings.engine_options))
    stages = StageTimer()
    flags = dict(candidate.flags)
    argv = tuple(engine.build_argv(settings.model, 0, flags))

    def outcome(status: str, kind: str | None = None, error: str | None = None, **extra: Any) -> TrialOutcome:
        return TrialOutcome(status=status, candidate=candidate, failure_kind=kind, error=error,
                            argv=extra.pop("argv", argv), stage_seconds=dict(stages.seconds), **extra)

    if settings.check_flags and flags:
        with stages("validate"):
            try:
                validate_flags(flags, read_supported_flags(engine))
            except UnknownFlagError as exc:
                return outcome("infeasible", "invalid_argument", str(exc), never_ready=True)
    t0 = time.monotonic()
    try:
        running = launch(engine, settings.model, flags, candidate.env, log_dir=settings.log_dir,
                         ready_timeout_s=settings.ready_timeout_s)
    except EngineLaunchError as exc:
        stages.add("launch", time.monotonic() - t0)
        status = "failed" if exc.kind == "port_in_use" else "infeasible"
        first_line = str(exc).split("\n")[0].removesuffix(", last lines:")
        return outcome(status, exc.kind, first_line, never_ready=True,
                       log_path=str(exc.log_path) if exc.log_path else None, log_tail=exc.log_tail or None)
    ready_s = running.ready_s or 0.0
    stages.add("launch", time.monotonic() - t0 - ready_s)
    stages.add("ready", ready_s)

    searches: list[LoadSearchResult] = []
    server_info: Mapping[str, Any] | None = None
    failure: tuple[str, str, str] | None = None  # status, kind, error
    try:
        server_info = running.server_info()
        with stages("warmup"):
            if settings.load.num_warmup:
                run_warmup_sync(running.base_url, settings.workload_for(settings.load.num_warmup),
                                settings.load)
        for r in range(repeats):
            runner = EngineStepRunner(running, engine, settings.workload_for, settings.load,
                                      settings.objective, settings.clock, settings.load_search,
                                      seed=settings.seed + 104_729 * r, log=log)
            try:
                searches.append(search_max_load(runner, settings.load_search,
                                                score_kind=settings.objective.kind))
            finally:
                stages.add("measure", runner.measure_s)
                stages.add("scrape", runner.scrape_s)
        with stages("scrape"):
            server_info = running.server_info() or server_info
    except EngineDied as exc:
        kind = classify_failure(running.log_tail(400)) or "crash"
        failure = ("infeasible", kind, str(exc))
    except MetricsParseError as exc:
        failure = ("failed", "bad_metrics", str(exc))
    except (EngineError, TunerError) as exc:
        if running.exit_code() is not None:
            kind = classify_failure(running.log_tail(400)) or "crash"
            failure = ("infeasible", kind, f"{exc} (the engine exited with code {running.exit_code()})")
        else:
            failure = ("failed", "request_failed", str(exc))
    finally:
        with stages("teardown"):
            running.stop(grace_s=settings.teardown_grace_s)
    common: dict[str, Any] = {
        "argv": tuple(running.argv), "engine_version": engine.version(server_info),
        "server_info": server_info, "log_path": str(running.log_path),
        "log_tail": running.log_tail(LOG_TAIL_LINES), "searches": tuple(searches),
    }
    if failure is not None:
        return outcome(failure[0], failure[1], failure[2], **common)
    if not any(s.best is not None for s in searches):
        reason = searches[0].stopped if searches else "no load step ran"
        text = "no load met the SLOs" + (f" ({reason})" if reason != "no load met the SLOs" else "")
        return outcome("infeasible", "slo", text, **common)
    return outcome("ok", **common)


@dataclass
class EngineEvaluator:
    """Measures candidates by launching the engine (study.py's `Evaluator`)."""

    settings: TrialSettings
    log: Any = None

    def evaluate(self, candidate: Candidate, *, repeats: int = 1) -> TrialOutcome:
        return run_trial(self.settings, candidate, repeats=repeats, log=self.log)
