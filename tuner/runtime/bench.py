"""One benchmark run: one engine session (runtime/session.py: validate, launch, warm up, tear down) in which
one load is driven while metrics are scraped. The CLI (`tuner bench`) and the service both call `run_bench`.

It returns a `BenchResult` (ok or failed, never a traceback for engine failures) and records it when handed a
database. Printing belongs to the callers.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tuner.errors import DatabaseError
from tuner.runtime.compare import Comparison, EngineFigures, compare, engine_figures
from tuner.runtime.engines import get_engine, normalize_flag
from tuner.runtime.engines.base import FlagValue
from tuner.runtime.loadgen.arrivals import Arrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync
from tuner.runtime.loadgen.summary import ClientSummary, Slo, summarize
from tuner.runtime.loadgen.workloads import Workload
from tuner.runtime.scraper import Delta, GaugeSampler, GaugeStat, delta
from tuner.runtime.session import STAGES as SESSION_STAGES
from tuner.runtime.session import EngineExited, EngineSession, SessionPlan, run_session

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = SESSION_STAGES  # one list for bench and flag-search trials (runtime/session.py)


@dataclass(frozen=True)
class BenchSpec:
    """Everything one trial needs. `engine_options` go to the engine's constructor (sim: gpu, time_scale,
    seed; sglang: python; vllm: executable)."""

    engine: str
    model: str
    workload: Workload
    arrivals: Arrivals
    load: LoadOptions = field(default_factory=LoadOptions)
    flags: Mapping[str, FlagValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    slos: tuple[Slo, ...] = ()
    log_dir: Path = Path("logs")
    ready_timeout_s: float = 1800.0
    check_flags: bool = True  # read the engine's --help and reject unknown flags before launching
    gauge_interval_s: float = 0.5
    teardown_grace_s: float = 15.0


@dataclass(frozen=True)
class BenchResult:
    status: str  # "ok" | "failed"
    # launch: oom, kv_cache, cuda_graph, invalid_argument, port_in_use, timeout, crash; later: crash (engine died under
    # load), bad_metrics (/metrics unreadable), request_failed (every warm-up request refused)
    failure_kind: str | None
    error: str | None
    engine: str
    engine_version: str | None
    model: str
    gpu: str | None
    flags: dict[str, Any]
    env: dict[str, str]
    workload: dict[str, Any]
    argv: tuple[str, ...]
    client: ClientSummary | None
    engine_figures: EngineFigures | None
    comparison: tuple[Comparison, ...]
    warnings: tuple[str, ...]
    server_info: dict[str, Any] | None
    log_path: str | None
    stage_seconds: dict[str, float]
    run_id: int | None = None
    store_error: str | None = None  # why the finished run could not be recorded (read-only or locked database)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["client"] = self.client.to_dict() if self.client else None
        out["engine_figures"] = self.engine_figures.to_dict() if self.engine_figures else None
        return _jsonable(out)

    def record_fields(self) -> dict[str, Any]:
        """The keyword arguments of tuner.store.bench.record_bench_run."""
        engine_metrics = None
        if self.engine_figures is not None:
            engine_metrics = {
                **self.engine_figures.to_dict(),
                "comparison": [_jsonable(asdict(c)) for c in self.comparison],
            }
        return {
            "engine": self.engine, "engine_version": self.engine_version, "model": self.model,
            "gpu": self.gpu, "flags": self.flags, "env": self.env,
            "workload": {**self.workload, "argv": list(self.argv), "warnings": list(self.warnings)},
            "status": self.status, "failure_kind": self.failure_kind, "error": self.error,
            "client_summary": self.client.to_dict() if self.client else None,
            "engine_metrics": engine_metrics, "server_info": _jsonable(self.server_info),
            "log_path": self.log_path, "stage_seconds": self.stage_seconds,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def detect_gpu_name() -> str | None:
    """The first GPU's name from nvidia-smi, or None when there is none (best effort, 10 s at most)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return f"{len(names)}x {names[0]}" if names else None


@dataclass
class _Measured:
    """What the load measured, kept also when the engine fails after the load (the client saw it)."""

    client: ClientSummary | None = None
    delta: Delta | None = None
    gauges: dict[str, GaugeStat | None] = field(default_factory=dict)


def _measure(spec: BenchSpec, measured: _Measured, session: EngineSession) -> _Measured:
    """Warm up, scrape, send the one load while sampling gauges, scrape again."""
    load_opts = spec.load if spec.load.model != "default" else replace(spec.load, model=session.served_model())
    session.warmup(spec.workload, load_opts)
    before = session.scrape()
    sampler = GaugeSampler(session.metrics_url, session.engine.metric_names.gauges(),
                           interval_s=spec.gauge_interval_s)
    with session.stages("load"), sampler:
        load = run_load_sync(session.base_url, spec.workload, spec.arrivals, load_opts,
                             abort_check=session.exited_text)
    measured.client = summarize(load, spec.slos)
    gone = session.exited_text()
    if gone:
        raise EngineExited(gone)
    measured.delta = delta(before, session.scrape())
    measured.gauges = sampler.stats()
    return measured


def run_bench(spec: BenchSpec, *, db: Any = None) -> BenchResult:
    """Run one trial end to end; engine failures come back as a failed BenchResult (kind + log tail).

    TunerErrors about the request itself (a bad workload file, an unknown engine) are raised. The engine's
    process group is gone when this returns, also on Ctrl-C. With `db`, the result is recorded; when the
    database refuses it, `store_error` says why and the result is returned all the same.
    """
    engine = get_engine(spec.engine, **dict(spec.engine_options))
    flags = {normalize_flag(k): v for k, v in spec.flags.items()}
    workload_desc = {
        **spec.workload.describe(),
        "arrivals": spec.arrivals.describe(),
        "endpoint": spec.load.endpoint,
        "num_warmup": spec.load.num_warmup,
        "seed": spec.load.seed,
        "slos": [str(s) for s in spec.slos],
    }
    gpu: str | None
    if spec.engine == "sim":
        gpu = f"{spec.engine_options.get('gpu', 'H200')} (simulated)"
    else:
        gpu = detect_gpu_name()
    plan = SessionPlan(engine=engine, model=spec.model, flags=flags, env=spec.env, log_dir=spec.log_dir,
                       ready_timeout_s=spec.ready_timeout_s, check_flags=spec.check_flags,
                       teardown_grace_s=spec.teardown_grace_s)
    measured = _Measured()
    session = run_session(plan, functools.partial(_measure, spec, measured))
    figures: EngineFigures | None = None
    if session.failure is None and measured.delta is not None:
        figures = engine_figures(measured.delta, engine, gauges=measured.gauges, server_info=session.server_info)
    warnings: list[str] = list(measured.client.warnings) if measured.client is not None else []
    comparison: tuple[Comparison, ...] = ()
    if measured.client is not None and figures is not None:
        comparison, disagreements = compare(measured.client, figures)
        warnings += disagreements
        if figures.missing:
            warnings.append("engine metrics missing: " + ", ".join(figures.missing))
    failure = session.failure
    result = BenchResult(
        status="failed" if failure else "ok", failure_kind=failure.kind if failure else None,
        error=session.error_text(), engine=spec.engine, engine_version=session.engine_version,
        model=spec.model, gpu=gpu, flags=_jsonable(flags), env=dict(spec.env),
        workload=_jsonable(workload_desc), argv=session.argv, client=measured.client, engine_figures=figures,
        comparison=comparison, warnings=tuple(warnings), server_info=session.server_info,
        log_path=session.log_path, stage_seconds=session.stage_seconds,
    )
    return _record(result, db)


def _record(result: BenchResult, db: Any) -> BenchResult:
    """Store `result`; a database that refuses it (read-only, locked) never costs the measured run."""
    if db is None:
        return result
    from tuner.store.bench import record_bench_run

    try:
        run_id = record_bench_run(db, **result.record_fields())
    except DatabaseError as exc:
        return replace(result, store_error=str(exc))
    return replace(result, run_id=run_id)
