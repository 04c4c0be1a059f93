"""One flag-search trial: one engine session (runtime/session.py: validate, launch, ready, warm-up, scrape,
teardown) in which the load searches run (timed as "load", as in `tuner bench`), with the engine's resolved args (/server_info), its
log and the metrics. Launch failures (OOM, CUDA graph capture, bad argument, timeout, crash) come back as an infeasible
outcome with the classified reason, never as an exception.

It knows nothing of Optuna or of the database: study.py records what this returns.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.runtime.engines import get_engine
from tuner.runtime.loadgen.client import LoadOptions
from tuner.runtime.session import STAGES as SESSION_STAGES
from tuner.runtime.session import EngineSession, SessionFailure, SessionPlan, run_session
from tuner.search.flags.load_search import (
    EngineStepRunner,
    LoadSearchConfig,
    LoadSearchResult,
    WorkloadFactory,
    search_max_load,
)
from tuner.search.flags.objective import Clock, Objective
from tuner.search.flags.space import Candidate

STAGES = SESSION_STAGES  # the same names as `tuner bench` (runtime/session.py)
# Kinds a config causes (the search learns from them) vs kinds of the environment (the trial is retried).
INFEASIBLE_KINDS = (
    "oom", "kv_cache", "cuda_graph", "invalid_argument", "timeout", "crash", "slo", "predicted_oom",
)
ENVIRONMENT_KINDS = ("port_in_use", "bad_metrics", "request_failed", "interrupted")


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


def _measure(settings: TrialSettings, repeats: int, log: Any, searches: list[LoadSearchResult],
             session: EngineSession) -> list[LoadSearchResult]:
    """Warm up, then `repeats` load searches in this one launch (another seed each); each finished search
    is appended to `searches` as it ends."""
    load = settings.load
    session.warmup(settings.workload_for(load.num_warmup) if load.num_warmup else None, load)
    for r in range(repeats):
        runner = EngineStepRunner(session.running, session.engine, settings.workload_for, load,
                                  settings.objective.slos, settings.clock, settings.load_search,
                                  seed=settings.seed + 104_729 * r, log=log)
        try:
            searches.append(search_max_load(runner, settings.load_search, score_kind=settings.objective.kind))
        finally:
            session.stages.add("load", runner.measure_s)
            session.stages.add("scrape", runner.scrape_s)
    return searches


def _failure_status(failure: SessionFailure) -> str:
    """infeasible: the config's doing (the search learns from it); failed: the environment's."""
    if failure.stage == "measure":
        return "infeasible" if failure.engine_exited else "failed"
    return "failed" if failure.kind == "port_in_use" else "infeasible"


def run_trial(settings: TrialSettings, candidate: Candidate, *, repeats: int = 1,
              log: Any = None) -> TrialOutcome:
    """Launch `candidate`, run `repeats` load searches in that one launch (another seed each), tear down.

    Engine failures become an infeasible/failed TrialOutcome; the process group is gone when this returns,
    also on Ctrl-C (which is re-raised).
    """
    engine = get_engine(settings.engine, **dict(settings.engine_options))
    plan = SessionPlan(engine=engine, model=settings.model, flags=dict(candidate.flags), env=candidate.env,
                       log_dir=settings.log_dir, ready_timeout_s=settings.ready_timeout_s,
                       check_flags=settings.check_flags, teardown_grace_s=settings.teardown_grace_s)
    searches: list[LoadSearchResult] = []
    session = run_session(plan, functools.partial(_measure, settings, repeats, log, searches))
    common: dict[str, Any] = {
        "candidate": candidate, "argv": session.argv, "engine_version": session.engine_version,
        "server_info": session.server_info, "log_path": session.log_path, "log_tail": session.log_tail,
        "stage_seconds": session.stage_seconds, "searches": tuple(searches),
    }
    failure = session.failure
    if failure is not None:
        error = failure.error
        if failure.stage == "launch":  # the launcher's message ends with the log tail, kept apart here
            error = error.split("\n")[0].removesuffix(", last lines:")
        return TrialOutcome(status=_failure_status(failure), failure_kind=failure.kind, error=error,
                            never_ready=failure.never_ready, **common)
    if not any(s.best is not None for s in searches):
        reason = searches[0].stopped if searches else "no load step ran"
        text = "no load met the SLOs" + (f" ({reason})" if reason != "no load met the SLOs" else "")
        return TrialOutcome(status="infeasible", failure_kind="slo", error=text, **common)
    return TrialOutcome(status="ok", **common)


@dataclass
class EngineEvaluator:
    """Measures candidates by launching the engine (study.py's `Evaluator`)."""

    settings: TrialSettings
    log: Any = None

    def evaluate(self, candidate: Candidate, *, repeats: int = 1) -> TrialOutcome:
        return run_trial(self.settings, candidate, repeats=repeats, log=self.log)
