"""Kernel results in the store: one row per measured config, resumable sweeps, best configs per sweep.

Plain functions taking a `Database`; every write is its own short transaction, so a crash or Ctrl-C between
two measurements loses at most the one in flight. Frozen dataclasses come out; ORM objects stay inside.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tuner.store.base import record_of
from tuner.store.db import Database
from tuner.store.models import KernelBestConfig, KernelMeasurement, KernelSweep, utc_now

MEASUREMENT_STATUSES: tuple[str, ...] = ("ok", "wrong", "compile_error", "launch_error", "oom", "timeout")
SWEEP_STATUSES: tuple[str, ...] = ("running", "finished", "interrupted", "failed")

# The columns that identify a sweep: running the same sweep again resumes this row.
SWEEP_KEY_FIELDS: tuple[str, ...] = (
    "model",
    "tp",
    "ep",
    "shared_experts_fusion",
    "kernel",
    "kernel_source",
    "device_name",
    "triton_version",
    "bench_method",
    "shape_key",
)
_SWEEP_REQUIRED_FIELDS: tuple[str, ...] = (
    *SWEEP_KEY_FIELDS,
    "dtype",
    "torch_version",
    "shape",
    "batch_sizes",
    "strategy",
)
_SWEEP_OPTIONAL_FIELDS: tuple[str, ...] = ("engine_version", "notes")


@dataclass(frozen=True)
class MeasurementContext:
    """What a timing depends on besides the shape, batch size and config."""

    kernel: str  # e.g. "fused_moe"
    kernel_source: str  # "tuner" | "sglang" | "vllm": whose kernel code was timed
    device_name: str  # e.g. "NVIDIA H100 80GB HBM3"
    triton_version: str
    bench_method: str  # version tag of the timing method; a new method never mixes with old timings


@dataclass(frozen=True)
class Measurement:
    """The outcome of timing one config at one batch size."""

    batch_size: int
    config_key: str  # KernelConfig.key
    status: str  # one of MEASUREMENT_STATUSES
    latency_us: float | None  # set only when status is "ok"
    latency_spread_us: float | None
    max_rel_error: float | None
    detail: str | None
    gpu_seconds: float  # device time spent on this measurement, compile included
    replays: int = 0  # graph replays the median latency is over (0 when not timed)


@dataclass(frozen=True)
class SweepRecord:
    id: int
    model: str
    tp: int
    ep: int
    shared_experts_fusion: bool
    dtype: str
    kernel: str
    kernel_source: str
    device_name: str
    triton_version: str
    torch_version: str
    bench_method: str
    shape: dict[str, Any]
    shape_key: str
    batch_sizes: tuple[int, ...]
    strategy: str
    status: str
    engine_version: str | None
    gpu_seconds: float
    created_at: dt.datetime
    updated_at: dt.datetime
    notes: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------- measurements


def record_measurement(db: Database, ctx: MeasurementContext, shape_key: str, m: Measurement) -> None:
    """Store `m`, replacing an earlier measurement of the same config; committed before returning."""
    _check_measurement(m)

    def work(session: Session) -> None:
        row = session.scalars(
            sa.select(KernelMeasurement).where(
                *_context_filter(ctx, shape_key),
                KernelMeasurement.batch_size == m.batch_size,
                KernelMeasurement.config_key == m.config_key,
            )
        ).one_or_none()
        if row is None:
            row = KernelMeasurement(
                **dataclasses.asdict(ctx),
                shape_key=shape_key,
                batch_size=m.batch_size,
                config_key=m.config_key,
            )
            session.add(row)
        row.status = m.status
        row.latency_us = m.latency_us if m.status == "ok" else None
        row.latency_spread_us = m.latency_spread_us
        row.max_rel_error = m.max_rel_error
        row.detail = m.detail
        row.gpu_seconds = float(m.gpu_seconds)
        row.replays = int(m.replays)
        row.created_at = utc_now()

    db.transaction(work, retry_conflicts=True)


def load_measurements(
    db: Database, ctx: MeasurementContext, shape_key: str, batch_size: int | None = None
) -> list[Measurement]:
    """All measurements of one shape in one context (optionally one batch size), by batch size then config."""
    conditions = list(_context_filter(ctx, shape_key))
    if batch_size is not None:
        conditions.append(KernelMeasurement.batch_size == batch_size)

    def work(session: Session) -> list[Measurement]:
        rows = session.scalars(
            sa.select(KernelMeasurement)
            .where(*conditions)
            .order_by(KernelMeasurement.batch_size, KernelMeasurement.config_key)
        )
        return [_measurement(row) for row in rows]

    return db.transaction(work, read_only=True)


def best_measurements(db: Database, ctx: MeasurementContext, shape_key: str) -> dict[int, Measurement]:
    """The fastest "ok" measurement per batch size (ties go to the smaller config key), by batch size."""
    best: dict[int, Measurement] = {}
    for m in load_measurements(db, ctx, shape_key):
        if m.status != "ok" or m.latency_us is None:
            continue
        current = best.get(m.batch_size)
        if current is None or (m.latency_us, m.config_key) < (current.latency_us, current.config_key):
            best[m.batch_size] = m
    return dict(sorted(best.items()))


# ---------------------------------------------------------------------------------------------- sweeps


def get_or_create_sweep(db: Database, **fields: Any) -> int:
    """The id of the sweep with these key fields, created if new; an existing one is set back to "running".

    Needs every field of SWEEP_KEY_FIELDS plus dtype, torch_version, shape (dict, or a MoeShape),
    batch_sizes and strategy; engine_version and notes are optional. Reopening updates the descriptive
    fields and widens batch_sizes to the union of old and new.
    """
    values = _sweep_values(fields)
    key = {name: values[name] for name in SWEEP_KEY_FIELDS}

    def work(session: Session) -> int:
        row = session.scalars(
            sa.select(KernelSweep).where(*(getattr(KernelSweep, k) == v for k, v in key.items()))
        ).one_or_none()
        if row is None:
            row = KernelSweep(status="running", gpu_seconds=0.0, **values)
            session.add(row)
            session.flush()
            return row.id
        row.status = "running"
        row.dtype = values["dtype"]
        row.torch_version = values["torch_version"]
        row.shape = values["shape"]
        row.strategy = values["strategy"]
        row.batch_sizes = sorted(set(row.batch_sizes) | set(values["batch_sizes"]))
        if values.get("engine_version") is not None:
            row.engine_version = values["engine_version"]
        if values.get("notes") is not None:
            row.notes = values["notes"]
        row.updated_at = utc_now()
        return row.id

    return db.transaction(work, retry_conflicts=True)


def set_sweep_status(db: Database, sweep_id: int, status: str, gpu_seconds_delta: float = 0.0) -> None:
    """Set a sweep's status and add `gpu_seconds_delta` to its device time (atomic with other writers)."""
    if status not in SWEEP_STATUSES:
        raise ValueError(f"unknown sweep status {status!r}; expected one of {', '.join(SWEEP_STATUSES)}")

    def work(session: Session) -> None:
        result = session.execute(
            sa.update(KernelSweep)
            .where(KernelSweep.id == sweep_id)
            .values(
                status=status,
                gpu_seconds=KernelSweep.gpu_seconds + float(gpu_seconds_delta),
                updated_at=utc_now(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise LookupError(f"no kernel sweep with id {sweep_id}")

    db.transaction(work)


@dataclass(frozen=True)
class BestConfig:
    """The config a sweep exports at one batch size, beside what the engine ran there before.

    Latencies are per call in microseconds, all from the same run. `config` is the up GEMM's engine JSON entry;
    `down_config` the down GEMM's (SGLang `_down` file) or None when the up config serves both GEMMs.
    `engine_config` is {"up": entry, "down": entry or None}. `kept_engine_choice` is True when no candidate
    beat the engine's choice by more than `noise_us`, so that choice itself is exported.
    """

    batch_size: int
    config: dict[str, Any]
    config_key: str
    latency_us: float
    default_latency_us: float | None = None
    down_config: dict[str, Any] | None = None
    engine_config: dict[str, Any] | None = None
    engine_source: str | None = None
    engine_latency_us: float | None = None
    single_config: dict[str, Any] | None = None
    single_latency_us: float | None = None
    kept_engine_choice: bool | None = None
    noise_us: float | None = None


_BEST_FIELDS = tuple(f.name for f in dataclasses.fields(BestConfig) if f.name != "batch_size")


def save_best_configs(db: Database, sweep_id: int, rows: Iterable[BestConfig]) -> None:
    """Store the best config per batch size. A row replaces the sweep's earlier row of the same batch size;
    others stay. LookupError when the sweep does not exist."""
    new_rows = {int(r.batch_size): r for r in rows}

    def work(session: Session) -> None:
        if session.get(KernelSweep, sweep_id) is None:
            raise LookupError(f"no kernel sweep with id {sweep_id}")
        existing = {
            row.batch_size: row
            for row in session.scalars(
                sa.select(KernelBestConfig).where(
                    KernelBestConfig.sweep_id == sweep_id, KernelBestConfig.batch_size.in_(list(new_rows))
                )
            )
        }
        for batch_size, best in sorted(new_rows.items()):
            row = existing.get(batch_size)
            if row is None:
                row = KernelBestConfig(sweep_id=sweep_id, batch_size=batch_size)
                session.add(row)
            for name in _BEST_FIELDS:
                value = getattr(best, name)
                setattr(row, name, dict(value) if isinstance(value, Mapping) else value)

    db.transaction(work, retry_conflicts=True)


def load_best_configs(db: Database, sweep_id: int) -> dict[int, BestConfig]:
    """batch_size -> BestConfig, by batch size."""

    def work(session: Session) -> dict[int, BestConfig]:
        rows = session.scalars(
            sa.select(KernelBestConfig)
            .where(KernelBestConfig.sweep_id == sweep_id)
            .order_by(KernelBestConfig.batch_size)
        )
        return {row.batch_size: _best_config(row) for row in rows}

    return db.transaction(work, read_only=True)


def _best_config(row: KernelBestConfig) -> BestConfig:
    return record_of(BestConfig, row)


def get_sweep(db: Database, sweep_id: int) -> SweepRecord | None:
    def work(session: Session) -> SweepRecord | None:
        row = session.get(KernelSweep, sweep_id)
        return None if row is None else _sweep_record(row)

    return db.transaction(work, read_only=True)


def list_sweeps(db: Database, model: str | None = None, device_name: str | None = None) -> list[SweepRecord]:
    """Sweeps, most recently updated first; optionally only one model and/or one device."""
    stmt = sa.select(KernelSweep).order_by(KernelSweep.updated_at.desc(), KernelSweep.id.desc())
    if model is not None:
        stmt = stmt.where(KernelSweep.model == model)
    if device_name is not None:
        stmt = stmt.where(KernelSweep.device_name == device_name)

    def work(session: Session) -> list[SweepRecord]:
        return [_sweep_record(row) for row in session.scalars(stmt)]

    return db.transaction(work, read_only=True)


def mark_interrupted_sweeps(db: Database, *, stale_after_s: float | None = None) -> int:
    """Set "running" sweeps to "interrupted" (their process died); returns how many.

    Call it when a new sweep process starts. With several sweep processes on one database, pass
    `stale_after_s` so that only sweeps not updated for that long are marked, not a live neighbour's.
    """
    conditions: list[Any] = [KernelSweep.status == "running"]
    if stale_after_s is not None:
        conditions.append(KernelSweep.updated_at < utc_now() - dt.timedelta(seconds=stale_after_s))

    def work(session: Session) -> int:
        result = session.execute(
            sa.update(KernelSweep)
            .where(*conditions)
            .values(status="interrupted", updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    return db.transaction(work)


# ---------------------------------------------------------------------------------------------- helpers


def _context_filter(ctx: MeasurementContext, shape_key: str) -> tuple[Any, ...]:
    return (
        KernelMeasurement.kernel == ctx.kernel,
        KernelMeasurement.kernel_source == ctx.kernel_source,
        KernelMeasurement.device_name == ctx.device_name,
        KernelMeasurement.triton_version == ctx.triton_version,
        KernelMeasurement.bench_method == ctx.bench_method,
        KernelMeasurement.shape_key == shape_key,
    )


def _check_measurement(m: Measurement) -> None:
    if m.status not in MEASUREMENT_STATUSES:
        raise ValueError(
            f"unknown measurement status {m.status!r}; expected one of {', '.join(MEASUREMENT_STATUSES)}"
        )
    if m.status == "ok" and m.latency_us is None:
        raise ValueError(f"an 'ok' measurement needs latency_us (batch size {m.batch_size}, {m.config_key})")


def _measurement(row: KernelMeasurement) -> Measurement:
    return record_of(Measurement, row)


def _sweep_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(_SWEEP_REQUIRED_FIELDS) - set(_SWEEP_OPTIONAL_FIELDS)
    if unknown:
        raise TypeError(f"get_or_create_sweep() got unknown field(s): {', '.join(sorted(unknown))}")
    missing = [name for name in _SWEEP_REQUIRED_FIELDS if fields.get(name) is None]
    if missing:
        raise TypeError(f"get_or_create_sweep() needs field(s): {', '.join(missing)}")
    values = dict(fields)
    values["tp"] = int(values["tp"])
    values["ep"] = int(values["ep"])
    values["shared_experts_fusion"] = bool(values["shared_experts_fusion"])
    values["shape"] = _jsonable(values["shape"])
    values["batch_sizes"] = sorted({int(b) for b in values["batch_sizes"]})
    if values.get("notes") is not None:
        values["notes"] = _jsonable(values["notes"])
    return values


def _jsonable(value: Any) -> Any:
    """Dataclasses (a MoeShape), enums and tuples as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _sweep_record(row: KernelSweep) -> SweepRecord:
    return SweepRecord(
        id=row.id,
        model=row.model,
        tp=row.tp,
        ep=row.ep,
        shared_experts_fusion=row.shared_experts_fusion,
        dtype=row.dtype,
        kernel=row.kernel,
        kernel_source=row.kernel_source,
        device_name=row.device_name,
        triton_version=row.triton_version,
        torch_version=row.torch_version,
        bench_method=row.bench_method,
        shape=dict(row.shape),
        shape_key=row.shape_key,
        batch_sizes=tuple(row.batch_sizes),
        strategy=row.strategy,
        status=row.status,
        engine_version=row.engine_version,
        gpu_seconds=row.gpu_seconds,
        created_at=row.created_at,
        updated_at=row.updated_at,
        notes=None if row.notes is None else dict(row.notes),
    )
