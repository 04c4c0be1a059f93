"""One engine session: check the flags, launch the engine in its own process group, wait until it is ready,
warm it up, hand it to the caller's measurement (one load, or a series of load steps), read /server_info
again, and always tear the process group down; every stage timed under one set of names.

`tuner bench` and every flag-search trial run through `run_session`. What is measured and how it is scored
stays with the callers; this module never decides whether a result is good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from tuner.errors import EngineError, TunerError
from tuner.runtime.engines import UnknownFlagError, validate_flags
from tuner.runtime.engines.base import Engine, FlagValue
from tuner.runtime.launcher import (
    EngineLaunchError,
    RunningEngine,
    classify_failure,
    launch,
    read_supported_flags,
)
from tuner.runtime.loadgen.client import LoadOptions, run_warmup_sync
from tuner.runtime.loadgen.workloads import Workload
from tuner.runtime.scraper import MetricsParseError, Snapshot, scrape
from tuner.runtime.stages import StageTimer

# What a session times, in order, the same for `tuner bench` and every flag-search trial: the caller's
# measurement times its requests as "load" (one bench load, or the load steps of a trial) and its metric
# scrapes as "scrape". (Rows stored before this had "measure" for a trial's load and, for bench, no "ready":
# the wait for /health was inside "launch".)
STAGES: tuple[str, ...] = ("validate", "launch", "ready", "warmup", "load", "scrape", "teardown")
LOG_TAIL_LINES = 60  # kept with a failed run (the launcher's own messages carry 30)
CLASSIFY_LINES = 400  # log lines searched for the reason an engine died

T = TypeVar("T")


class EngineExited(EngineError):
    """The engine process exited while the measurement was using it."""


@dataclass(frozen=True)
class SessionPlan:
    """What one launch needs."""

    engine: Engine
    model: str
    flags: Mapping[str, FlagValue] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path = Path("logs")
    ready_timeout_s: float = 1800.0
    check_flags: bool = True  # read the engine's --help and reject unknown flags before launching
    teardown_grace_s: float = 15.0


@dataclass(frozen=True)
class SessionFailure:
    """Why a session ended without a measurement. `stage`: validate, launch (the engine never became
    ready) or measure (it failed while measured). `kind`: one of the launcher's FAILURE_KINDS, or
    bad_metrics (/metrics unreadable) or request_failed (the engine refused requests while alive).
    `error` is the reason; a launch failure's carries the log tail, a measure failure's does not (see
    `SessionResult.error_text`)."""

    stage: str
    kind: str
    error: str
    engine_exited: bool = False

    @property
    def never_ready(self) -> bool:
        return self.stage in ("validate", "launch")


@dataclass(frozen=True)
class SessionResult(Generic[T]):
    """What the measurement returned (None when it failed), with everything known about the launch."""

    value: T | None
    failure: SessionFailure | None
    argv: tuple[str, ...]
    engine_version: str | None
    server_info: dict[str, Any] | None
    log_path: str | None
    log_tail: str | None
    stage_seconds: dict[str, float]

    def error_text(self) -> str | None:
        """The failure's reason; for an engine that died while measured, with its log's last lines."""
        if self.failure is None:
            return None
        if self.failure.engine_exited:
            return f"{self.failure.error}. Log {self.log_path}, last lines:\n{self.log_tail}"
        return self.failure.error


class EngineSession:
    """A ready engine, as the measurement sees it: its URLs, warm-up, timed scrapes, and whether it is
    still alive. Stages are timed on `stages`; the measurement may time its own there too."""

    def __init__(self, running: RunningEngine, engine: Engine, model: str, stages: StageTimer):
        self.running = running
        self.engine = engine
        self.model = model
        self.stages = stages
        self.server_info: dict[str, Any] | None = running.server_info()

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def metrics_url(self) -> str:
        return self.running.base_url + "/metrics"

    def served_model(self) -> str:
        """The model id the engine serves (OpenAI requests must name it on vLLM)."""
        try:
            r = httpx.get(self.base_url + "/v1/models", timeout=10, trust_env=False)
            data = r.json().get("data") if r.status_code == 200 else None
            if data and isinstance(data[0], dict) and data[0].get("id"):
                return str(data[0]["id"])
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return self.model

    def warmup(self, workload: Workload | None, load: LoadOptions) -> None:
        """Send `load.num_warmup` unmeasured requests (none without a workload), timed as "warmup"."""
        with self.stages("warmup"):
            if workload is not None:
                run_warmup_sync(self.base_url, workload, load)

    def scrape(self) -> Snapshot:
        with self.stages("scrape"):
            return scrape(self.metrics_url)

    def exit_code(self) -> int | None:
        return self.running.exit_code()

    def exited_text(self) -> str | None:
        """'the engine exited with code N during the load', or None while it runs."""
        code = self.running.exit_code()
        return None if code is None else f"the engine exited with code {code} during the load"

    def refresh_server_info(self) -> None:
        """Read /server_info again (cumulative states after the load), timed as a scrape."""
        with self.stages("scrape"):
            self.server_info = self.running.server_info() or self.server_info


def _measure_failure(exc: TunerError, running: RunningEngine) -> SessionFailure:
    """A failure while measuring: the engine died (kind read from its log), /metrics was unreadable, or it
    refused requests while alive."""
    code = running.exit_code()
    if code is not None:
        kind = classify_failure(running.log_tail(CLASSIFY_LINES)) or "crash"
        text = str(exc) if isinstance(exc, EngineExited) else f"{exc} (the engine exited with code {code})"
        return SessionFailure("measure", kind, text, engine_exited=True)
    if isinstance(exc, MetricsParseError):
        return SessionFailure("measure", "bad_metrics", str(exc))
    return SessionFailure("measure", "request_failed", str(exc))


def _validate(plan: SessionPlan, stages: StageTimer) -> SessionFailure | None:
    if not (plan.check_flags and plan.flags):
        return None
    with stages("validate"):
        try:
            validate_flags(dict(plan.flags), read_supported_flags(plan.engine))
        except UnknownFlagError as exc:
            return SessionFailure("validate", "invalid_argument", str(exc))
        except TunerError as exc:
            return SessionFailure("validate", "crash", f"cannot read the engine's flags: {exc}")
    return None


def run_session(plan: SessionPlan, measure: Callable[[EngineSession], T]) -> SessionResult[T]:
    """Launch, wait ready, run `measure(session)`, read /server_info again, tear down.

    Engine failures (refused flags, a launch that never became ready, an engine dying or refusing requests
    while measured) come back as `failure`, never as an exception. The process group is gone when this
    returns, also on Ctrl-C (which is re-raised).
    """
    stages = StageTimer()
    argv = tuple(plan.engine.build_argv(plan.model, 0, dict(plan.flags)))

    def result(failure: SessionFailure | None, value: T | None = None, running: RunningEngine | None = None,
               server_info: dict[str, Any] | None = None, log_path: str | None = None,
               log_tail: str | None = None) -> SessionResult[T]:
        if running is not None:
            log_path, log_tail = str(running.log_path), running.log_tail(LOG_TAIL_LINES)
        return SessionResult(
            value=value, failure=failure, argv=tuple(running.argv) if running is not None else argv,
            engine_version=plan.engine.version(server_info) if running is not None else None,
            server_info=server_info, log_path=log_path, log_tail=log_tail, stage_seconds=dict(stages.seconds))

    refused = _validate(plan, stages)
    if refused is not None:
        return result(refused)
    t0 = time.monotonic()
    try:
        running = launch(plan.engine, plan.model, dict(plan.flags), plan.env, log_dir=plan.log_dir,
                         ready_timeout_s=plan.ready_timeout_s)
    except EngineLaunchError as exc:
        stages.add("launch", time.monotonic() - t0)
        return result(SessionFailure("launch", exc.kind, str(exc)),
                      log_path=str(exc.log_path) if exc.log_path else None, log_tail=exc.log_tail or None)
    ready_s = running.ready_s or 0.0
    stages.add("launch", time.monotonic() - t0 - ready_s)
    stages.add("ready", ready_s)

    session: EngineSession | None = None
    value: T | None = None
    failure: SessionFailure | None = None
    try:
        session = EngineSession(running, plan.engine, plan.model, stages)
        value = measure(session)
        if running.exit_code() is not None:
            raise EngineExited(session.exited_text() or "the engine exited")
        session.refresh_server_info()
    except TunerError as exc:  # EngineError, MetricsParseError and the like: the engine's doing
        failure = _measure_failure(exc, running)
        value = None
    finally:
        with stages("teardown"):
            running.stop(grace_s=plan.teardown_grace_s)
    server_info = session.server_info if session is not None else None
    return result(failure, value, running, server_info)
