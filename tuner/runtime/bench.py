"""One benchmark trial: validate flags, launch the engine, warm up, drive load while scraping metrics, tear
down; every stage timed. The CLI (`tuner bench`) and the service both call `run_bench`.

It returns a `BenchResult` (ok or failed, never a traceback for engine failures) and records it when handed a
database. Printing belongs to the callers.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from tuner.errors import DatabaseError, EngineError, TunerError
from tuner.runtime.compare import Comparison, EngineFigures, compare, engine_figures
from tuner.runtime.engines import UnknownFlagError, get_engine, normalize_flag, validate_flags
from tuner.runtime.engines.base import FlagValue
from tuner.runtime.launcher import EngineLaunchError, classify_failure, launch, read_supported_flags
from tuner.runtime.loadgen.arrivals import Arrivals
from tuner.runtime.loadgen.client import LoadOptions, run_load_sync, run_warmup_sync
from tuner.runtime.loadgen.summary import ClientSummary, Slo, summarize
from tuner.runtime.loadgen.workloads import Workload
from tuner.runtime.scraper import GaugeSampler, MetricsParseError, delta, scrape
from tuner.runtime.stages import StageTimer

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("validate", "launch", "warmup", "load", "scrape", "teardown")


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


def _served_model(base_url: str, fallback: str) -> str:
    """The model id the engine serves (OpenAI requests must name it on vLLM)."""
    try:
        r = httpx.get(base_url + "/v1/models", timeout=10, trust_env=False)
        data = r.json().get("data") if r.status_code == 200 else None
        if data and isinstance(data[0], dict) and data[0].get("id"):
            return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return fallback


def run_bench(spec: BenchSpec, *, db: Any = None) -> BenchResult:
    """Run one trial end to end; engine failures come back as a failed BenchResult (kind + log tail).

    TunerErrors about the request itself (a bad workload file, an unknown engine) are raised. The engine's
    process group is gone when this returns, also on Ctrl-C. With `db`, the result is recorded; when the
    database refuses it, `store_error` says why and the result is returned all the same.
    """
    engine = get_engine(spec.engine, **dict(spec.engine_options))
    stages = StageTimer()
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
    # Filled in as the stages go; every exit returns a copy of it.
    result = BenchResult(
        status="failed", failure_kind=None, error=None, engine=spec.engine, engine_version=None,
        model=spec.model, gpu=gpu, flags=_jsonable(flags), env=dict(spec.env),
        workload=_jsonable(workload_desc), argv=tuple(engine.build_argv(spec.model, 0, flags)), client=None,
        engine_figures=None, comparison=(), warnings=(), server_info=None, log_path=None, stage_seconds={},
    )

    def finish(**changes: Any) -> BenchResult:
        return _record(replace(result, stage_seconds=dict(stages.seconds), **changes), db)

    if spec.check_flags and flags:
        with stages("validate"):
            try:
                validate_flags(flags, read_supported_flags(engine))
            except UnknownFlagError as exc:
                return finish(failure_kind="invalid_argument", error=str(exc))
            except TunerError as exc:
                return finish(failure_kind="crash", error=f"cannot read the engine's flags: {exc}")

    try:
        with stages("launch"):
            running = launch(engine, spec.model, flags, spec.env, log_dir=spec.log_dir,
                             ready_timeout_s=spec.ready_timeout_s)
    except EngineLaunchError as exc:
        return finish(failure_kind=exc.kind, error=str(exc),
                      log_path=str(exc.log_path) if exc.log_path else None)

    result = replace(result, argv=tuple(running.argv), log_path=str(running.log_path))
    server_info: dict[str, Any] | None = None
    client_summary: ClientSummary | None = None
    figures: EngineFigures | None = None
    failure: tuple[str, str] | None = None
    warnings: list[str] = []
    metrics_url = running.base_url + "/metrics"

    def engine_gone() -> str | None:
        code = running.exit_code()
        return None if code is None else f"the engine exited with code {code} during the load"

    try:
        server_info = running.server_info()
        model_id = _served_model(running.base_url, spec.model)
        load_opts = spec.load if spec.load.model != "default" else replace(spec.load, model=model_id)
        with stages("warmup"):
            run_warmup_sync(running.base_url, spec.workload, load_opts)
        with stages("scrape"):
            before = scrape(metrics_url)
        sampler = GaugeSampler(metrics_url, engine.metric_names.gauges(), interval_s=spec.gauge_interval_s)
        with stages("load"), sampler:
            load = run_load_sync(running.base_url, spec.workload, spec.arrivals, load_opts,
                                 abort_check=engine_gone)
        client_summary = summarize(load, spec.slos)
        gone = engine_gone()
        if gone:
            failure = (classify_failure(running.log_tail(400)) or "crash",
                       f"{gone}. Log {running.log_path}, last lines:\n{running.log_tail()}")
        else:
            with stages("scrape"):
                after = scrape(metrics_url)
                server_info = running.server_info() or server_info  # cumulative states after the load
            figures = engine_figures(delta(before, after), engine, gauges=sampler.stats(),
                                     server_info=server_info)
    except (EngineError, TunerError) as exc:
        gone = engine_gone()
        if gone:
            kind = classify_failure(running.log_tail(400)) or "crash"
            failure = (kind, f"{exc} ({gone}; log {running.log_path}, last lines:\n{running.log_tail()})")
        else:
            kind = "bad_metrics" if isinstance(exc, MetricsParseError) else "request_failed"
            failure = (kind, str(exc))
    finally:
        with stages("teardown"):
            running.stop(grace_s=spec.teardown_grace_s)

    comparison: tuple[Comparison, ...] = ()
    if client_summary is not None:
        warnings += client_summary.warnings
    if client_summary is not None and figures is not None:
        comparison, disagreements = compare(client_summary, figures)
        warnings += disagreements
        if figures.missing:
            warnings.append("engine metrics missing: " + ", ".join(figures.missing))
    return finish(
        status="failed" if failure else "ok", failure_kind=failure[0] if failure else None,
        error=failure[1] if failure else None, engine_version=engine.version(server_info),
        client=client_summary, engine_figures=figures, comparison=comparison, warnings=tuple(warnings),
        server_info=server_info,
    )


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
