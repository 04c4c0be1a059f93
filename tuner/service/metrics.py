"""The service's own Prometheus metrics (`/metrics`), with prometheus_client.

Two sources: a collector that reads the database at each scrape (jobs by state, units by state, live workers and
their heartbeats, expired leases, best objective per study, sweep progress), so what it shows is true of every
worker sharing the database; and histograms observed as things finish (unit durations of this service's workers;
engine-launch durations of every flag trial stored since the service started, read incrementally from the
trials table). Unit durations come from the service's worker processes (prometheus_client's multi-process mode);
units run by external `tuner worker` processes are in tuner_work_units but not in the histogram: a work unit's
row keeps no claim time to time them from at scrape (that would need a column and a migration). Metric names are in METRIC_NAMES; dashboards/tuner.json plots them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tuner.jobs import units
from tuner.store.db import Database
from tuner.store.flag_models import FlagStudy, FlagTrial
from tuner.store.job_models import Job, WorkUnit
from tuner.store.models import KernelBestConfig, KernelSweep

log = logging.getLogger(__name__)
UNIT_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 3600, 7200)
LAUNCH_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
METRIC_NAMES = (
    "tuner_jobs", "tuner_work_units", "tuner_unit_reclaims_total", "tuner_units_lease_expired",
    "tuner_workers_live", "tuner_worker_last_heartbeat_timestamp_seconds", "tuner_study_best_objective",
    "tuner_study_trials", "tuner_sweep_batch_sizes_done", "tuner_sweep_batch_sizes_total", "tuner_job_progress_ratio",
    "tuner_unit_duration_seconds", "tuner_engine_launch_duration_seconds", "tuner_http_requests_total",
)


def _base_kind(kind: str) -> str:
    """"kernel_sweep:NVIDIA H200" -> "kernel_sweep" (the device goes in its own label)."""
    return kind.split(":", 1)[0]


class StoreCollector(Collector):
    """Reads the database at each scrape; a scrape that cannot reach it yields nothing instead of failing."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        try:
            families = self.db.transaction(self._read, read_only=True)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database blinked
            return
        yield from families

    def _read(self, session: Any) -> list[Metric]:
        jobs = GaugeMetricFamily("tuner_jobs", "Jobs by kind and state", labels=["kind", "state"])
        by_job: dict[tuple[str, str], int] = {}
        for kind, state, n in session.execute(sa.select(Job.kind, Job.state, sa.func.count())
                                              .group_by(Job.kind, Job.state)):
            key = (_base_kind(kind), state)
            by_job[key] = by_job.get(key, 0) + int(n)
        for kind in {k for k, _ in by_job}:
            for state in units.JOB_STATES:
                jobs.add_metric([kind, state], by_job.get((kind, state), 0))

        unit_states = GaugeMetricFamily("tuner_work_units", "Work units by job kind and state (done, failed, "
                                        "cancelled are outcomes)", labels=["kind", "state"])
        by_unit: dict[tuple[str, str], int] = {}
        reclaims: dict[str, int] = {}
        for kind, state, n, extra in session.execute(
                sa.select(Job.kind, WorkUnit.state, sa.func.count(),
                          sa.func.coalesce(sa.func.sum(sa.case((WorkUnit.attempts > 1, WorkUnit.attempts - 1),
                                                               else_=0)), 0))
                .join(Job, Job.id == WorkUnit.job_id).group_by(Job.kind, WorkUnit.state)):
            key = (_base_kind(kind), state)
            by_unit[key] = by_unit.get(key, 0) + int(n)
            reclaims[key[0]] = reclaims.get(key[0], 0) + int(extra)
        for kind in {k for k, _ in by_unit}:
            for state in units.UNIT_STATES:
                unit_states.add_metric([kind, state], by_unit.get((kind, state), 0))
        reclaimed = CounterMetricFamily("tuner_unit_reclaims", "Claims of units after a lease expired (the "
                                        "worker holding it stopped heart-beating)", labels=["kind"])
        for kind, n in reclaims.items():
            reclaimed.add_metric([kind], n)

        now = units._now(session)
        expired = GaugeMetricFamily("tuner_units_lease_expired", "Claimed units whose lease has expired and that "
                                    "no worker has taken over yet")
        expired.add_metric([], int(session.scalar(sa.select(sa.func.count()).select_from(WorkUnit).where(
            WorkUnit.state == "claimed", WorkUnit.lease_expires_at < now)) or 0))

        beats: dict[str, float] = {}
        for worker, beat in session.execute(sa.select(WorkUnit.worker_id, sa.func.max(WorkUnit.heartbeat_at))
                                            .where(WorkUnit.state == "claimed", WorkUnit.lease_expires_at >= now)
                                            .group_by(WorkUnit.worker_id)):
            if worker is not None and beat is not None:
                beats[worker] = _timestamp(beat)
        live = GaugeMetricFamily("tuner_workers_live", "Workers holding a unit under a live lease")
        live.add_metric([], len(beats))
        heartbeat = GaugeMetricFamily("tuner_worker_last_heartbeat_timestamp_seconds",
                                      "Unix time of each live worker's last heartbeat", labels=["worker"])
        for worker, ts in sorted(beats.items()):
            heartbeat.add_metric([worker], ts)

        best = GaugeMetricFamily("tuner_study_best_objective", "Best goodput (output tok/s meeting the SLOs) of "
                                 "any trial of each flag study", labels=["study", "engine", "model"])
        trials = GaugeMetricFamily("tuner_study_trials", "Search trials of each flag study by status",
                                   labels=["study", "status"])
        studies = {sid: (name, engine, model) for sid, name, engine, model in session.execute(
            sa.select(FlagStudy.id, FlagStudy.name, FlagStudy.engine, FlagStudy.model))}
        for sid, value in session.execute(sa.select(FlagTrial.study_id, sa.func.max(FlagTrial.goodput_tok_s))
                                          .group_by(FlagTrial.study_id)):
            if sid in studies and value is not None:
                best.add_metric(list(studies[sid]), float(value))
        for sid, status, n in session.execute(sa.select(FlagTrial.study_id, FlagTrial.status, sa.func.count())
                                              .where(FlagTrial.kind == "search")
                                              .group_by(FlagTrial.study_id, FlagTrial.status)):
            if sid in studies:
                trials.add_metric([studies[sid][0], status], int(n))

        done = GaugeMetricFamily("tuner_sweep_batch_sizes_done", "Batch sizes with a best config, per kernel sweep",
                                 labels=["sweep_id", "model", "kernel", "device"])
        total = GaugeMetricFamily("tuner_sweep_batch_sizes_total", "Batch sizes planned, per kernel sweep",
                                  labels=["sweep_id", "model", "kernel", "device"])
        counts = dict(session.execute(sa.select(KernelBestConfig.sweep_id, sa.func.count())
                                      .group_by(KernelBestConfig.sweep_id)).all())
        for sweep in session.execute(sa.select(KernelSweep.id, KernelSweep.model, KernelSweep.kernel,
                                               KernelSweep.device_name, KernelSweep.batch_sizes)):
            labels = [str(sweep.id), sweep.model, sweep.kernel, sweep.device_name]
            done.add_metric(labels, int(counts.get(sweep.id, 0)))
            total.add_metric(labels, len(sweep.batch_sizes or []))

        progress = GaugeMetricFamily("tuner_job_progress_ratio", "Share of units ended (done, failed or "
                                     "cancelled) of each queued or running job", labels=["job_id", "kind"])
        active = dict(session.execute(sa.select(Job.id, Job.kind).where(Job.state.in_(("queued", "running")))).all())
        if active:
            ended: dict[int, list[int]] = {job_id: [0, 0] for job_id in active}
            for job_id, state, n in session.execute(
                    sa.select(WorkUnit.job_id, WorkUnit.state, sa.func.count())
                    .where(WorkUnit.job_id.in_(list(active))).group_by(WorkUnit.job_id, WorkUnit.state)):
                ended[job_id][1] += int(n)
                if state in ("done", "failed", "cancelled"):
                    ended[job_id][0] += int(n)
            for job_id, (n_ended, n_all) in ended.items():
                progress.add_metric([str(job_id), _base_kind(active[job_id])], n_ended / n_all if n_all else 0.0)
        return [jobs, unit_states, reclaimed, expired, live, heartbeat, best, trials, done, total, progress]


def _timestamp(value: Any) -> float:
    return float(value.timestamp())


class ServiceMetrics:
    """The registry `/metrics` serves: the store collector, this process's histograms and request counter."""

    def __init__(self, db: Database, worker_metrics_dir: str | None = None) -> None:
        """`worker_metrics_dir`: the PROMETHEUS_MULTIPROC_DIR the service's worker processes write their unit
        durations (tuner_unit_duration_seconds) to."""
        from prometheus_client import Counter
        from prometheus_client.multiprocess import MultiProcessCollector

        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(db))
        if worker_metrics_dir is not None:
            MultiProcessCollector(self.registry, path=worker_metrics_dir)
        self.launch_duration = Histogram("tuner_engine_launch_duration_seconds", "Engine launch to ready (/health), "
                                         "per flag trial stored since the service started", ["engine"],
                                         buckets=LAUNCH_BUCKETS_S, registry=self.registry)
        self.http_requests = Counter("tuner_http_requests", "API and page requests by route and status code",
                                     ["route", "code"], registry=self.registry)
        self._db = db
        self._lock = threading.Lock()
        self._last_trial_id: int | None = None

    def observe_new_trials(self) -> None:
        """Observe the launch durations of flag trials stored since the last call (the first call only marks
        where to start, so a restart does not count old trials twice)."""
        with self._lock:
            def work(session: Any) -> None:
                if self._last_trial_id is None:
                    self._last_trial_id = int(session.scalar(sa.select(sa.func.max(FlagTrial.id))) or 0)
                    return
                rows = session.execute(
                    sa.select(FlagTrial.id, FlagTrial.finished_at, FlagTrial.stage_seconds, FlagStudy.engine)
                    .join(FlagStudy, FlagStudy.id == FlagTrial.study_id)
                    .where(FlagTrial.id > self._last_trial_id).order_by(FlagTrial.id).limit(10_000)).all()
                for trial_id, finished_at, stages, engine in rows:
                    if finished_at is None:  # still running: start from here next time
                        return
                    self._last_trial_id = max(self._last_trial_id or 0, int(trial_id))
                    if isinstance(stages, dict) and "launch" in stages:
                        seconds = float(stages.get("launch") or 0) + float(stages.get("ready") or 0)
                        self.launch_duration.labels(engine=engine).observe(seconds)

            try:
                self._db.transaction(work, read_only=True)
            except Exception as exc:  # noqa: BLE001 - try again at the next scrape
                log.debug("reading new flag trials for /metrics failed: %s", exc)
