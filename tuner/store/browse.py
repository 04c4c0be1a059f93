"""Paged, filtered, sorted reads of the store for the service's API and pages (and any other lister).

Every query here is bounded (`limit` at most MAX_PAGE rows) and uses an index for its filter, so a page stays
fast with hundreds of thousands of trials or measurements stored. Rows come out as plain JSON-ready dicts;
`Page` carries the total count so a client can page. Knows nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tuner.errors import TunerError
from tuner.store.db import Database
from tuner.store.flag_models import FlagStudy, FlagTrial
from tuner.store.job_models import Job, WorkUnit
from tuner.store.models import KernelBestConfig, KernelMeasurement, KernelSweep

log = logging.getLogger(__name__)

MAX_PAGE = 500
DEFAULT_PAGE = 50


@dataclass(frozen=True)
class Page:
    """`items` (at most `limit` JSON-ready dicts) starting at `offset` of `total` matching rows."""

    items: list[dict[str, Any]]
    total: int
    offset: int
    limit: int

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "total": self.total, "offset": self.offset, "limit": self.limit}


class BadQueryError(TunerError):
    """A page request that does not fit: unknown sort key or filter value, a negative offset, ..."""


def page_bounds(offset: int, limit: int) -> tuple[int, int]:
    """(offset, limit) checked: offset >= 0, 1 <= limit <= MAX_PAGE; BadQueryError otherwise."""
    if offset < 0:
        raise BadQueryError(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= MAX_PAGE:
        raise BadQueryError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    return offset, limit


def _order(columns: Mapping[str, Any], sort: str, tie: Any, dialect: str) -> list[Any]:
    """ORDER BY for `sort` ("name" ascending, "-name" descending) with `tie` breaking ties. Missing values (NULL)
    come last when descending on every backend (PostgreSQL would put them first), first when ascending."""
    name = sort.lstrip("-")
    if name not in columns:
        raise BadQueryError(f"cannot sort by {name!r}; choose from {', '.join(sorted(columns))}")
    column = columns[name]
    if not sort.startswith("-"):
        return [column.asc(), *(t.asc() for t in _ties(tie))]
    first = column.desc().nulls_last() if dialect == "postgresql" else column.desc()
    return [first, *(t.desc() for t in _ties(tie))]


def _ties(tie: Any) -> tuple[Any, ...]:
    return tuple(tie) if isinstance(tie, (list, tuple)) else (tie,)


def _page_rows(session: Session, model: Any, where: list[Any], order: list[Any], offset: int, limit: int) -> list[Any]:
    """The rows of one page in two steps: the page's ids from the index (OFFSET skips index entries, not whole
    rows with their JSON), then those rows."""
    ids = list(session.scalars(sa.select(model.id).where(*where).order_by(*order).offset(offset).limit(limit)))
    if not ids:
        return []
    found = {row.id: row for row in session.scalars(sa.select(model).where(model.id.in_(ids)))}
    return [found[i] for i in ids]


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _clean(value: Any) -> Any:
    """JSON-ready: datetimes as ISO text, non-finite floats as None."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _row(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: _clean(getattr(obj, n)) for n in names}


def _count(session: Session, model: Any, where: list[Any]) -> int:
    return int(session.scalar(sa.select(sa.func.count(model.id)).where(*where)) or 0)


# ------------------------------------------------------------------------------------------------- jobs

JOB_COLUMNS = ("id", "key", "kind", "spec", "state", "max_attempts", "error", "created_at", "updated_at")
UNIT_COLUMNS = ("id", "job_id", "key", "payload", "state", "attempts", "worker_id", "lease_expires_at",
                "heartbeat_at", "result", "error", "created_at", "updated_at")
JOB_SORTS = {"id": Job.id, "created_at": Job.created_at, "updated_at": Job.updated_at, "state": Job.state,
             "kind": Job.kind}


def jobs_page(db: Database, *, offset: int = 0, limit: int = DEFAULT_PAGE, states: list[str] | None = None,
              kind: str | None = None, sort: str = "-id") -> Page:
    """Jobs with their units counted by state (`units`: {state: n}, `units_total`), newest first by default.
    `kind` matches the stored kind's prefix ("kernel_sweep" finds "kernel_sweep:NVIDIA H200")."""
    offset, limit = page_bounds(offset, limit)
    where: list[Any] = []
    if states:
        where.append(Job.state.in_(states))
    if kind:
        where.append(sa.or_(Job.kind == kind, Job.kind.startswith(kind + ":", autoescape=True)))

    def work(session: Session) -> Page:
        total = _count(session, Job, where)
        rows = _page_rows(session, Job, where, _order(JOB_SORTS, sort, Job.id, _dialect(session)), offset, limit)
        counts = _unit_counts(session, [r.id for r in rows])
        items = []
        for r in rows:
            item = _row(r, JOB_COLUMNS)
            item["units"] = counts.get(r.id, {})
            item["units_total"] = sum(item["units"].values())
            items.append(item)
        return Page(items, total, offset, limit)

    return db.transaction(work, read_only=True)


def _unit_counts(session: Session, job_ids: list[int]) -> dict[int, dict[str, int]]:
    if not job_ids:
        return {}
    rows = session.execute(sa.select(WorkUnit.job_id, WorkUnit.state, sa.func.count())
                           .where(WorkUnit.job_id.in_(job_ids)).group_by(WorkUnit.job_id, WorkUnit.state))
    out: dict[int, dict[str, int]] = {}
    for job_id, state, n in rows:
        out.setdefault(job_id, {})[state] = int(n)
    return out


def job_detail(db: Database, job_id: int) -> dict[str, Any] | None:
    """One job as in `jobs_page`, or None if there is none with this id."""

    def work(session: Session) -> dict[str, Any] | None:
        row = session.get(Job, job_id)
        if row is None:
            return None
        item = _row(row, JOB_COLUMNS)
        item["units"] = _unit_counts(session, [job_id]).get(job_id, {})
        item["units_total"] = sum(item["units"].values())
        return item

    return db.transaction(work, read_only=True)


def units_page(db: Database, job_id: int, *, offset: int = 0, limit: int = DEFAULT_PAGE,
               states: list[str] | None = None) -> Page:
    """A job's units in queue order."""
    offset, limit = page_bounds(offset, limit)
    where: list[Any] = [WorkUnit.job_id == job_id]
    if states:
        where.append(WorkUnit.state.in_(states))

    def work(session: Session) -> Page:
        total = _count(session, WorkUnit, where)
        rows = _page_rows(session, WorkUnit, where, [WorkUnit.id], offset, limit)
        return Page([_row(r, UNIT_COLUMNS) for r in rows], total, offset, limit)

    return db.transaction(work, read_only=True)


# ------------------------------------------------------------------------------------------ flag studies

STUDY_COLUMNS = ("id", "name", "created_at", "updated_at", "status", "engine", "engine_version", "gpu", "model",
                 "workload", "objective", "sampler", "space", "load_search", "settings", "result")
TRIAL_COLUMNS = ("id", "study_id", "trial_number", "kind", "attempt", "is_baseline", "created_at", "finished_at",
                 "status", "failure_kind", "error", "params", "flags", "env", "engine_version", "gpu", "values",
                 "goodput_tok_s", "goodput_req_s", "max_load", "log_path")
TRIAL_SORTS = {"trial_number": FlagTrial.trial_number, "goodput_tok_s": FlagTrial.goodput_tok_s,
               "goodput_req_s": FlagTrial.goodput_req_s, "max_load": FlagTrial.max_load,
               "created_at": FlagTrial.created_at, "status": FlagTrial.status}
STUDY_SORTS = {"id": FlagStudy.id, "created_at": FlagStudy.created_at, "updated_at": FlagStudy.updated_at,
               "name": FlagStudy.name}


def studies_page(db: Database, *, offset: int = 0, limit: int = DEFAULT_PAGE, engine: str | None = None,
                 model: str | None = None, sort: str = "-id") -> Page:
    """Flag studies (newest first) with their search trials counted by status (`trials`: {status: n})."""
    offset, limit = page_bounds(offset, limit)
    where: list[Any] = []
    if engine:
        where.append(FlagStudy.engine == engine)
    if model:
        where.append(FlagStudy.model == model)

    def work(session: Session) -> Page:
        total = _count(session, FlagStudy, where)
        rows = _page_rows(session, FlagStudy, where, _order(STUDY_SORTS, sort, FlagStudy.id, _dialect(session)),
                          offset, limit)
        counts = _trial_counts(session, [r.id for r in rows])
        items = []
        for r in rows:
            item = _row(r, STUDY_COLUMNS)
            item["trials"] = counts.get(r.id, {})
            items.append(item)
        return Page(items, total, offset, limit)

    return db.transaction(work, read_only=True)


def _trial_counts(session: Session, study_ids: list[int]) -> dict[int, dict[str, int]]:
    if not study_ids:
        return {}
    rows = session.execute(sa.select(FlagTrial.study_id, FlagTrial.status, sa.func.count())
                           .where(FlagTrial.study_id.in_(study_ids), FlagTrial.kind == "search")
                           .group_by(FlagTrial.study_id, FlagTrial.status))
    out: dict[int, dict[str, int]] = {}
    for study_id, status, n in rows:
        out.setdefault(study_id, {})[status] = int(n)
    return out


def study_by_name(db: Database, name: str) -> dict[str, Any] | None:
    """One study as in `studies_page`, or None."""

    def work(session: Session) -> dict[str, Any] | None:
        row = session.scalar(sa.select(FlagStudy).where(FlagStudy.name == name))
        if row is None:
            return None
        item = _row(row, STUDY_COLUMNS)
        item["trials"] = _trial_counts(session, [row.id]).get(row.id, {})
        return item

    return db.transaction(work, read_only=True)


def trials_page(db: Database, study_id: int, *, offset: int = 0, limit: int = DEFAULT_PAGE,
                kind: str | None = None, status: str | None = None, sort: str = "trial_number") -> Page:
    """A study's trials (search trials and re-measurements unless `kind` picks one), filtered by `status`,
    sorted by `sort` (see TRIAL_SORTS; "-goodput_tok_s" puts the best first)."""
    offset, limit = page_bounds(offset, limit)
    where: list[Any] = [FlagTrial.study_id == study_id]
    if kind:
        where.append(FlagTrial.kind == kind)
    if status:
        where.append(FlagTrial.status == status)
    # trial_number's ties broken as its unique index orders them, so the index serves the page
    tie = (FlagTrial.kind, FlagTrial.attempt) if sort.lstrip("-") == "trial_number" else FlagTrial.id

    def work(session: Session) -> Page:
        total = _count(session, FlagTrial, where)
        rows = _page_rows(session, FlagTrial, where, _order(TRIAL_SORTS, sort, tie, _dialect(session)), offset, limit)
        return Page([_row(r, TRIAL_COLUMNS) for r in rows], total, offset, limit)

    return db.transaction(work, read_only=True)


def trial_log_tail(db: Database, trial_id: int) -> dict[str, Any] | None:
    """A trial's engine log tail and where the whole log is, or None if there is no such trial."""

    def work(session: Session) -> dict[str, Any] | None:
        row = session.get(FlagTrial, trial_id)
        return None if row is None else {"trial_id": row.id, "log_path": row.log_path, "log_tail": row.log_tail}

    return db.transaction(work, read_only=True)


# ----------------------------------------------------------------------------------------- kernel sweeps

SWEEP_COLUMNS = ("id", "model", "tp", "ep", "shared_experts_fusion", "dtype", "kernel", "kernel_source",
                 "device_name", "triton_version", "torch_version", "bench_method", "shape", "shape_key",
                 "batch_sizes", "strategy", "status", "engine_version", "gpu_seconds", "created_at", "updated_at",
                 "notes")
BEST_COLUMNS = ("batch_size", "config", "config_key", "latency_us", "default_latency_us", "down_config",
                "engine_config", "engine_source", "engine_latency_us", "single_config", "single_latency_us",
                "kept_engine_choice", "noise_us")
MEASUREMENT_COLUMNS = ("id", "batch_size", "config_key", "status", "latency_us", "latency_spread_us",
                       "max_rel_error", "detail", "gpu_seconds", "replays", "created_at")
MEASUREMENT_SORTS = {"batch_size": KernelMeasurement.batch_size, "latency_us": KernelMeasurement.latency_us,
                     "config_key": KernelMeasurement.config_key, "created_at": KernelMeasurement.created_at}
# What makes two sweeps' best configs interchangeable for a deployment: the "config database" key.
DEPLOYMENT_KEY = ("device_name", "model", "tp", "ep", "dtype", "kernel", "kernel_source", "engine_version")


def sweeps_page(db: Database, *, offset: int = 0, limit: int = DEFAULT_PAGE, model: str | None = None,
                device_name: str | None = None, kernel: str | None = None, sort: str = "-id") -> Page:
    """Kernel sweeps, newest first, each with `best_count` (batch sizes with a best config stored)."""
    offset, limit = page_bounds(offset, limit)
    where: list[Any] = [column == value for column, value in ((KernelSweep.model, model),
                        (KernelSweep.device_name, device_name), (KernelSweep.kernel, kernel)) if value]
    sorts = {"id": KernelSweep.id, "updated_at": KernelSweep.updated_at, "model": KernelSweep.model}

    def work(session: Session) -> Page:
        total = _count(session, KernelSweep, where)
        rows = _page_rows(session, KernelSweep, where, _order(sorts, sort, KernelSweep.id, _dialect(session)),
                          offset, limit)
        best = dict(session.execute(sa.select(KernelBestConfig.sweep_id, sa.func.count())
                                    .where(KernelBestConfig.sweep_id.in_([r.id for r in rows]))
                                    .group_by(KernelBestConfig.sweep_id)).all())
        items = []
        for r in rows:
            item = _row(r, SWEEP_COLUMNS)
            item["best_count"] = int(best.get(r.id, 0))
            items.append(item)
        return Page(items, total, offset, limit)

    return db.transaction(work, read_only=True)


def sweep_detail(db: Database, sweep_id: int) -> dict[str, Any] | None:
    """A sweep with its best config per batch size (`best`, by batch size) and, per batch size, the speed-up of
    the best over the engine's own choice (shipped file or default) and over the engine's default."""

    def work(session: Session) -> dict[str, Any] | None:
        sweep = session.get(KernelSweep, sweep_id)
        if sweep is None:
            return None
        item = _row(sweep, SWEEP_COLUMNS)
        rows = session.scalars(sa.select(KernelBestConfig).where(KernelBestConfig.sweep_id == sweep_id)
                               .order_by(KernelBestConfig.batch_size))
        best = []
        for r in rows:
            b = _row(r, BEST_COLUMNS)
            b["speedup_vs_engine"] = _ratio(r.engine_latency_us, r.latency_us)
            b["speedup_vs_default"] = _ratio(r.default_latency_us, r.latency_us)
            best.append(b)
        item["best"] = best
        item["geomean_speedup_vs_engine"] = _geomean([b["speedup_vs_engine"] for b in best])
        item["geomean_speedup_vs_default"] = _geomean([b["speedup_vs_default"] for b in best])
        return item

    return db.transaction(work, read_only=True)


def _ratio(slow: float | None, fast: float | None) -> float | None:
    if slow is None or fast is None or not fast > 0 or not slow > 0:
        return None
    return slow / fast


def _geomean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in kept) / len(kept)) if kept else None


def _measurement_filter(sweep: KernelSweep) -> list[Any]:
    """The measurements of a sweep: its context and shape (the leading columns of their unique index)."""
    return [KernelMeasurement.kernel == sweep.kernel, KernelMeasurement.kernel_source == sweep.kernel_source,
            KernelMeasurement.device_name == sweep.device_name,
            KernelMeasurement.triton_version == sweep.triton_version,
            KernelMeasurement.bench_method == sweep.bench_method, KernelMeasurement.shape_key == sweep.shape_key]


def measurements_page(db: Database, sweep_id: int, *, offset: int = 0, limit: int = DEFAULT_PAGE,
                      batch_size: int | None = None, status: str | None = None,
                      sort: str = "latency_us") -> Page | None:
    """The measurements behind a sweep (same kernel, source, device, Triton, timing method and shape), fastest
    first by default; None if there is no such sweep."""
    offset, limit = page_bounds(offset, limit)

    def work(session: Session) -> Page | None:
        sweep = session.get(KernelSweep, sweep_id)
        if sweep is None:
            return None
        where = _measurement_filter(sweep)
        if batch_size is not None:
            where.append(KernelMeasurement.batch_size == batch_size)
        if status:
            where.append(KernelMeasurement.status == status)
        total = _count(session, KernelMeasurement, where)
        rows = _page_rows(session, KernelMeasurement, where,
                          _order(MEASUREMENT_SORTS, sort, KernelMeasurement.id, _dialect(session)), offset, limit)
        return Page([_row(r, MEASUREMENT_COLUMNS) for r in rows], total, offset, limit)

    return db.transaction(work, read_only=True)


def sweep_heatmap(db: Database, sweep_id: int, *, max_configs: int = 40) -> dict[str, Any] | None:
    """Latency (us) by batch size and config for a heat map: the configs that are best at some batch size,
    then those measured at the most batch sizes, up to `max_configs`. `latency_us[i][j]` is config i at
    batch size j (None: not measured or failed); `best_us[j]` the fastest at batch size j."""

    def work(session: Session) -> dict[str, Any] | None:
        sweep = session.get(KernelSweep, sweep_id)
        if sweep is None:
            return None
        ok = [*_measurement_filter(sweep), KernelMeasurement.status == "ok"]
        sub = sa.select(KernelMeasurement).where(*ok).subquery()
        ranked = session.execute(
            sa.select(sub.c.config_key, sa.func.count(), sa.func.min(sub.c.latency_us))
            .group_by(sub.c.config_key).order_by(sa.func.count().desc(), sub.c.config_key).limit(5000)).all()
        best_keys = list(session.scalars(sa.select(KernelBestConfig.config_key)
                                         .where(KernelBestConfig.sweep_id == sweep_id)
                                         .order_by(KernelBestConfig.batch_size)))
        keys = list(dict.fromkeys([*best_keys, *(k for k, _, _ in ranked)]))[:max_configs]
        rows = session.execute(sa.select(KernelMeasurement.config_key, KernelMeasurement.batch_size,
                                         KernelMeasurement.latency_us)
                               .where(*ok, KernelMeasurement.config_key.in_(keys))).all() if keys else []
        batch_sizes = sorted({int(m) for _, m, _ in rows} | set(sweep.batch_sizes or []))
        col = {m: j for j, m in enumerate(batch_sizes)}
        grid: list[list[float | None]] = [[None] * len(batch_sizes) for _ in keys]
        index = {k: i for i, k in enumerate(keys)}
        for key, m, latency in rows:
            grid[index[key]][col[int(m)]] = latency
        best_us = [min((v for v in (row[j] for row in grid) if v is not None), default=None)
                   for j in range(len(batch_sizes))]
        return {"sweep_id": sweep_id, "batch_sizes": batch_sizes, "configs": keys, "latency_us": grid,
                "best_us": best_us}

    return db.transaction(work, read_only=True)


def config_database(db: Database, *, device_name: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The best stored configs per deployment (GPU, model, TP/EP, dtype, kernel, engine and version): the newest
    sweep of each key that has best configs, with its geometric-mean speed-ups. At most MAX_PAGE rows."""

    def work(session: Session) -> list[dict[str, Any]]:
        counts = sa.select(KernelBestConfig.sweep_id, sa.func.count().label("n")) \
            .group_by(KernelBestConfig.sweep_id).subquery()
        query = sa.select(KernelSweep, counts.c.n).join(counts, counts.c.sweep_id == KernelSweep.id)
        if device_name:
            query = query.where(KernelSweep.device_name == device_name)
        if model:
            query = query.where(KernelSweep.model == model)
        newest: dict[tuple[Any, ...], tuple[KernelSweep, int]] = {}
        for sweep, n in session.execute(query.order_by(KernelSweep.updated_at, KernelSweep.id).limit(10 * MAX_PAGE)):
            newest[tuple(getattr(sweep, k) for k in DEPLOYMENT_KEY) + (sweep.shape_key,)] = (sweep, int(n))
        out = []
        for sweep, n in sorted(newest.values(), key=lambda p: (p[0].device_name, p[0].model, p[0].tp, p[0].ep)):
            best = session.execute(sa.select(KernelBestConfig.latency_us, KernelBestConfig.engine_latency_us,
                                             KernelBestConfig.default_latency_us)
                                   .where(KernelBestConfig.sweep_id == sweep.id)).all()
            item = {k: _clean(getattr(sweep, k)) for k in (*DEPLOYMENT_KEY, "id", "shape_key", "updated_at")}
            item["sweep_id"] = item.pop("id")
            item["best_count"] = n
            item["geomean_speedup_vs_engine"] = _geomean([_ratio(e, b) for b, e, _ in best])
            item["geomean_speedup_vs_default"] = _geomean([_ratio(d, b) for b, _, d in best])
            out.append(item)
        return out[:MAX_PAGE]

    return db.transaction(work, read_only=True)


# ------------------------------------------------------------------------------------------------ Pareto

MAX_PARETO_POINTS = 3000  # points sent for the chart: all of the front, an even sample of the rest
# studies whose points are kept in memory (~500 bytes a point: a 100 000-trial study of 3-step load searches
# holds ~150 MB), the least recently changed forgotten first
MAX_PARETO_STUDIES = 8


@dataclass
class _ParetoState:
    """What the cache knows of one study: every trial row it has read (id -> finished_at), the points of each,
    all live points in read order (removed ones marked dead, compacted now and then) and the current front."""

    objective: str
    metric: str
    slos: list[str]
    seen: dict[int, Any]  # trial id -> finished_at when read (None: still running)
    by_trial: dict[int, list[dict[str, Any]]]
    points: list[dict[str, Any]]  # in read order; a point of a re-read trial gets "_dead": True
    dead: int
    front: list[dict[str, Any]]  # sorted by (latency, -goodput)
    id_sum: int
    max_id: int
    max_finished: Any
    version: tuple[Any, ...] | None = None
    answer: dict[str, Any] | None = None


_PARETO_CACHE: dict[tuple[str, int], _ParetoState] = {}  # (database URL, study id) -> state
_PARETO_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_PARETO_LOCKS_LOCK = threading.Lock()
_PARETO_COLUMNS = (FlagTrial.id, FlagTrial.finished_at, FlagTrial.trial_number, FlagTrial.kind,
                   FlagTrial.is_baseline, FlagTrial.searches)


def _trial_points(number: int, kind: str, baseline: bool, searches: Any, metric: str) -> list[dict[str, Any]]:
    """The measured load steps of a search trial's first load search, as chart points (none for other trials)."""
    if kind != "search" or not isinstance(searches, list) or not searches or not isinstance(searches[0], dict):
        return []
    points = []
    for step in searches[0].get("steps") or ():
        figures = step.get("figures") or {}
        latency = (figures.get("latency_s") or {}).get(metric)
        through = figures.get("output_throughput_tok_s")
        goodput = figures.get("goodput_tok_s")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (latency, through, goodput)):
            continue
        points.append({"trial": number, "step": step.get("index"), "load": _clean(step.get("load")),
                       "throughput_tok_s": through, "goodput_tok_s": goodput, "latency_s": latency,
                       "meets_slo": bool(step.get("meets_slo")), "is_baseline": bool(baseline)})
    return points


def _front_of(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point dominates (another with at most the latency and at least the goodput; of equal
    points the one of the lowest trial and step), sorted by latency. O(n log n). front(A | B) = front(front(A) | B),
    which is what makes adding trials cheap."""
    out: list[dict[str, Any]] = []
    best_so_far = -math.inf
    for p in sorted(points, key=lambda p: (p["latency_s"], -p["goodput_tok_s"], p["trial"], p["step"] or 0)):
        if p["goodput_tok_s"] > best_so_far:
            out.append(p)
            best_so_far = p["goodput_tok_s"]
    return out


def _apply_rows(state: _ParetoState, rows: Any) -> None:
    """Fold trial rows (read since the state's last look, or re-read) into the state: a re-read trial's old points
    are dropped; the front is updated from the new points alone unless a dropped point was on it."""
    front_ids = {id(p) for p in state.front}
    new_points: list[dict[str, Any]] = []
    rebuild = False
    for trial_id, finished, number, kind, baseline, searches in rows:
        old = state.by_trial.pop(trial_id, None)
        if old:
            for p in old:
                p["_dead"] = True
                rebuild = rebuild or id(p) in front_ids
            state.dead += len(old)
        if trial_id not in state.seen:
            state.id_sum += trial_id
        state.seen[trial_id] = finished
        state.max_id = max(state.max_id, trial_id)
        if finished is not None and (state.max_finished is None or finished > state.max_finished):
            state.max_finished = finished
        points = _trial_points(number, kind, baseline, searches, state.metric)
        if points:
            state.by_trial[trial_id] = points
            state.points.extend(points)
            new_points.extend(points)
    if state.dead > len(state.points) // 2:
        state.points = [p for p in state.points if not p.get("_dead")]
        state.dead = 0
    if rebuild:
        state.front = _front_of([p for p in state.points if not p.get("_dead")])
    elif new_points:
        state.front = _front_of(state.front + new_points)


def _forget_trials(state: _ParetoState, trial_ids: set[int]) -> bool:
    """Drop deleted trials from the state; True if one of them had a point on the front (rebuild it)."""
    front_ids = {id(p) for p in state.front}
    rebuild = False
    for trial_id in trial_ids:
        state.seen.pop(trial_id, None)
        state.id_sum -= trial_id
        for p in state.by_trial.pop(trial_id, ()):
            p["_dead"] = True
            state.dead += 1
            rebuild = rebuild or id(p) in front_ids
    return rebuild


def _pareto_answer(state: _ParetoState) -> dict[str, Any]:
    """The JSON answer: the front and an even sample of the other live points, at most MAX_PARETO_POINTS in all
    (more only if the front alone is longer)."""
    on_front = {id(p) for p in state.front}
    live = len(state.points) - state.dead
    shown = [dict(p, on_front=True) for p in state.front]
    room = MAX_PARETO_POINTS - len(shown)
    if live <= MAX_PARETO_POINTS:
        rest = (p for p in state.points if not p.get("_dead") and id(p) not in on_front)
    else:
        stride = max(1, math.ceil(len(state.points) / max(1, room)))
        rest = (p for p in state.points[::stride] if not p.get("_dead") and id(p) not in on_front)
    limit = None if live <= MAX_PARETO_POINTS else max(room, 1)
    shown.extend(dict(p, on_front=False) for p in itertools.islice(rest, limit))
    return {"metric": state.metric, "slos": state.slos, "total_points": live, "points": shown}


def warm_pareto_caches(db: Database, limit: int = MAX_PARETO_STUDIES) -> int:
    """Fill the Pareto cache of the `limit` most recently updated studies (what a service does in the background at
    start, so no page view pays the first full read: ~11 s for 100 000 trials). Returns how many were read; a study
    that cannot be read is logged and skipped."""

    def recent(session: Session) -> list[int]:
        return list(session.scalars(sa.select(FlagStudy.id).order_by(FlagStudy.updated_at.desc(),
                                                                       FlagStudy.id.desc()).limit(limit)))

    done = 0
    for study_id in db.transaction(recent, read_only=True):
        try:
            study_pareto(db, study_id)
            done += 1
        except Exception as exc:  # noqa: BLE001 - a warm-up must never stop the service
            log.warning("warming the Pareto front of study %s failed: %s", study_id, exc)
    return done


def study_pareto(db: Database, study_id: int) -> dict[str, Any] | None:
    """Goodput (output tok/s of requests meeting the SLOs) vs the study's Pareto latency (`objective.pareto_metric`,
    default tpot_p99) of every measured load step of every search trial's first load search, the front marked (no
    other step has at least the goodput at at most the latency). At most MAX_PARETO_POINTS points: the whole front
    and an even sample of the rest (`total_points` says how many there are). None if there is no such study.

    Cached per study and kept up to date incrementally: each call checks the study's trials (count, sum and newest
    of their ids, newest finish, how many finished: one indexed aggregate) and, if they changed, reads only the
    trials added since (id above the newest seen), those finished since (finish after the newest seen) and those
    that were still running, and updates the front from the old front plus the new points. A trial that was re-run or
    deleted (the count or the id sum no longer match) is reconciled from the study's (id, finished_at) pairs. Only
    the first call for a study in this process (or after its objective changed, or after an update failed) reads
    every trial: ~11 s for 100 000 trials (docs/benchmarks/service-latency.md). Thread-safe (one lock per study).
    Errors: the database's (SQLAlchemyError) as they come."""

    def version(session: Session) -> tuple[Any, ...] | None:
        study = session.get(FlagStudy, study_id)
        if study is None:
            return None
        stats = session.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(FlagTrial.id), 0),
                                          sa.func.max(FlagTrial.id), sa.func.max(FlagTrial.finished_at),
                                          sa.func.count(FlagTrial.finished_at))  # finished ones: a running one ended
                                .where(FlagTrial.study_id == study_id)).one()
        # the study's identity (a database dropped and seeded again reuses ids) and objective: a full read if changed
        return (tuple(stats), f"{study.created_at.isoformat()} {json.dumps(study.objective, sort_keys=True, default=str)}")

    def full(session: Session, objective: str) -> _ParetoState:
        study = session.get(FlagStudy, study_id)
        assert study is not None
        spec = study.objective if isinstance(study.objective, dict) else {}
        state = _ParetoState(objective=objective, metric=str(spec.get("pareto_metric") or "tpot_p99"),
                             slos=[str(s) for s in spec.get("slos") or []], seen={}, by_trial={}, points=[],
                             dead=0, front=[], id_sum=0, max_id=0, max_finished=None)
        _apply_rows(state, session.execute(sa.select(*_PARETO_COLUMNS).where(FlagTrial.study_id == study_id)
                                           .order_by(FlagTrial.trial_number, FlagTrial.id)))
        return state

    def delta(session: Session, state: _ParetoState, count: int, id_sum: int) -> None:
        # the ids first, each from an index (one query with OR would walk every trial of the study), then their rows
        where = FlagTrial.study_id == study_id
        changed = set(session.scalars(sa.select(FlagTrial.id).where(where, FlagTrial.id > state.max_id)))
        if state.max_finished is not None:
            changed.update(session.scalars(sa.select(FlagTrial.id)
                                           .where(where, FlagTrial.finished_at > state.max_finished)))
        running = [i for i, f in state.seen.items() if f is None]
        changed.update(running[:MAX_PAGE])
        ordered = sorted(changed)
        for start in range(0, len(ordered), MAX_PAGE):
            _apply_rows(state, session.execute(sa.select(*_PARETO_COLUMNS)
                                               .where(FlagTrial.id.in_(ordered[start:start + MAX_PAGE]))
                                               .order_by(FlagTrial.trial_number, FlagTrial.id)))
        if len(state.seen) == count and state.id_sum == id_sum and len(running) <= MAX_PAGE:
            return
        # a trial re-run (deleted and inserted again), deleted, committed late with a lower id or finished with an
        # older timestamp: compare every (id, finished_at) pair, re-read only what differs
        pairs = dict(session.execute(sa.select(FlagTrial.id, FlagTrial.finished_at)
                                     .where(FlagTrial.study_id == study_id)).all())
        rebuild = _forget_trials(state, set(state.seen) - set(pairs))
        stale = [i for i, f in pairs.items() if i not in state.seen or state.seen[i] != f]
        for start in range(0, len(stale), MAX_PAGE):
            _apply_rows(state, session.execute(sa.select(*_PARETO_COLUMNS)
                                               .where(FlagTrial.id.in_(stale[start:start + MAX_PAGE]))))
        if rebuild:
            state.front = _front_of([p for p in state.points if not p.get("_dead")])

    with _PARETO_LOCKS_LOCK:
        where = (str(db.url), study_id)
        lock = _PARETO_LOCKS.setdefault(where, threading.Lock())
    with lock:  # one reader of a study per process at a time: a second caller waits for the first's update
        key = db.transaction(version, read_only=True)
        if key is None:
            _PARETO_CACHE.pop(where, None)
            return None
        (count, id_sum, *_), objective = key
        state = _PARETO_CACHE.get(where)
        if state is not None and state.version == key and state.answer is not None:
            return state.answer
        _PARETO_CACHE.pop(where, None)  # back only once it is whole: a failed update starts over next time
        if state is None or state.objective != objective:
            state = db.transaction(lambda s: full(s, objective), read_only=True)
        else:
            db.transaction(lambda s: delta(s, state, int(count), int(id_sum)), read_only=True)
        state.version = key
        state.answer = _pareto_answer(state)
        if len(_PARETO_CACHE) >= MAX_PARETO_STUDIES:  # the least recently changed study goes
            _PARETO_CACHE.pop(next(iter(_PARETO_CACHE)), None)
        _PARETO_CACHE[where] = state
        return state.answer
