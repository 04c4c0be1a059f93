"""`tuner watch`'s loop body: learn the live window, compare it with the deployment's baseline workload,
record the check, and on drift store the live workload and queue a flag-search re-tune job (unless a
cool-down holds it back). Also the watcher's own Prometheus metrics, in a registry a service can mount.

Nothing runs the queued job here; the work-unit queue's workers do.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from tuner.errors import TunerError
from tuner.jobs.units import create_job
from tuner.store.db import Database
from tuner.store.workloads import (
    DriftCheckRecord,
    last_retune,
    load_workload,
    record_drift_check,
    save_workload,
)
from tuner.workload.drift import DriftThresholds, compare
from tuner.workload_model import WorkloadModel

log = logging.getLogger(__name__)
RETUNE_JOB_KIND = "flag_search"


class WatchMetrics:
    """drift score per deployment, last re-tune time and reason, re-tunes queued and held back."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift_score = Gauge("tuner_workload_drift_score",
                                 "Largest drift score / threshold of the last check (>= 1: drift)",
                                 ["deployment"], registry=r)
        self.component = Gauge("tuner_workload_drift_component",
                               "Each drift rule's score in its threshold's unit, last check", ["deployment", "rule"],
                               registry=r)
        self.last_check = Gauge("tuner_workload_last_check_timestamp_seconds", "Unix time of the last check",
                                ["deployment"], registry=r)
        self.last_retune = Gauge("tuner_workload_last_retune_timestamp_seconds",
                                 "Unix time the last re-tune job was queued", ["deployment"], registry=r)
        self.last_reason = Gauge("tuner_workload_last_retune_info",
                                 "1 for the reason of the last re-tune queued", ["deployment", "reason", "job_id"],
                                 registry=r)
        self.retunes = Counter("tuner_workload_retunes", "Re-tune jobs queued", ["deployment"], registry=r)
        self.held = Counter("tuner_workload_retunes_held", "Drifts a cool-down kept from queueing a re-tune",
                            ["deployment"], registry=r)
        self.errors = Counter("tuner_workload_check_errors", "Checks that could not read live traffic",
                              ["deployment"], registry=r)

    def observe(self, check: DriftCheckRecord) -> None:
        d = check.deployment
        self.drift_score.labels(d).set(check.drift_score)
        for rule, score in check.scores.items():
            self.component.labels(d, rule).set(score)
        self.last_check.labels(d).set(check.checked_at.timestamp())
        if check.job_id is not None:
            self.last_retune.labels(d).set(check.checked_at.timestamp())
            self.last_reason.clear()
            self.last_reason.labels(d, "; ".join(check.reasons)[:200], str(check.job_id)).set(1)
            self.retunes.labels(d).inc()
        elif check.held_by_cooldown:
            self.held.labels(d).inc()


_METRICS: WatchMetrics | None = None


def watch_metrics() -> WatchMetrics:
    """The process-wide watcher metrics; mount `watch_metrics().registry` on the service's /metrics."""
    global _METRICS
    if _METRICS is None:
        _METRICS = WatchMetrics()
    return _METRICS


def watch_registry() -> CollectorRegistry:
    return watch_metrics().registry


@dataclass(frozen=True)
class WatchConfig:
    deployment: str
    baseline: str  # learned workload name
    thresholds: DriftThresholds
    cooldown_s: float = 3600.0
    retune_spec: dict | None = None  # extra fields of the queued flag-search job's spec (engine, model, SLO...)


def check_once(db: Database, cfg: WatchConfig, live: WorkloadModel, *, source_ref: str,
               metrics: WatchMetrics | None = None, now: Callable[[], float] = time.time) -> DriftCheckRecord:
    """Compare `live` with the baseline, record the check; on drift store `live` and queue a re-tune."""
    base = load_workload(db, cfg.baseline)
    report = compare(base.model, live, cfg.thresholds)
    job_id, live_name, held = None, None, False
    if report.drifted:
        previous = last_retune(db, cfg.deployment)
        since = now() - previous.checked_at.timestamp() if previous else None
        if since is not None and since < cfg.cooldown_s:
            held = True
            log.info("%s drifted (%s), but a re-tune was queued %.0fs ago (cool-down %.0fs)", cfg.deployment,
                     "; ".join(report.reasons), since, cfg.cooldown_s)
        else:
            stamp = dt.datetime.fromtimestamp(live.window_end_s, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            live_name = f"{cfg.deployment}-drift-{stamp}"
            save_workload(db, live_name, live, "prometheus", source_ref)
            spec = {**(cfg.retune_spec or {}), "workload": f"learned:{live_name}", "deployment": cfg.deployment,
                    "baseline_workload": cfg.baseline, "reasons": list(report.reasons)}
            job = create_job(db, RETUNE_JOB_KIND, spec, [("search", {"workload": f"learned:{live_name}"})])
            job_id = job.id
    check = record_drift_check(
        db, deployment=cfg.deployment, baseline=cfg.baseline, baseline_fingerprint=base.fingerprint,
        live_workload=live_name, window_start=dt.datetime.fromtimestamp(live.window_start_s, dt.UTC),
        window_end=dt.datetime.fromtimestamp(live.window_end_s, dt.UTC), drifted=report.drifted,
        drift_score=report.drift_score, scores=report.scores, reasons=list(report.reasons), job_id=job_id,
        held_by_cooldown=held, details={"live_fingerprint": live.fingerprint(), "ratios": report.ratios},
    )
    if metrics is not None:
        metrics.observe(check)
    return check


def run_watch(db: Database, cfg: WatchConfig, learn_live: Callable[[], tuple[WorkloadModel, str]], *,
              interval_s: float, once: bool, metrics: WatchMetrics | None = None,
              report: Callable[[DriftCheckRecord], None] = lambda c: None,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Check every `interval_s` until interrupted (or once). A window that cannot be read is logged and
    counted, and the loop goes on; with `once` it is raised. Returns the number of checks that drifted."""
    drifted = 0
    while True:
        started = time.monotonic()
        try:
            live, ref = learn_live()
            check = check_once(db, cfg, live, source_ref=ref, metrics=metrics)
            drifted += check.drifted
            report(check)
        except TunerError as exc:
            if once:
                raise
            log.warning("watch %s: %s", cfg.deployment, exc)
            if metrics is not None:
                metrics.errors.labels(cfg.deployment).inc()
        if once:
            return drifted
        sleep(max(0.0, interval_s - (time.monotonic() - started)))
