"""SQLAlchemy models of the results store: kernel measurements, sweeps and their best configs, bench runs.

Only portable column types (JSON, timezone-aware timestamps) so SQLite and PostgreSQL both work. The schema
itself is created by the Alembic migrations in `migrations/versions`; keep the two in step.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

# Flag-search and job tables live in their own modules; importing them here registers them on Base.metadata,
# which the migrations environment and the schema tests read through this module.
from tuner.store import flag_models, job_models, workload_models  # noqa: F401
from tuner.store.base import NAMING_CONVENTION, Base, JsonOrNull, UtcDateTime, utc_now

__all__ = ["NAMING_CONVENTION", "TABLES", "Base", "BenchRun", "JsonOrNull", "KernelBestConfig",
           "KernelMeasurement", "KernelSweep", "UtcDateTime", "utc_now"]

class KernelMeasurement(Base):
    """One timing of one kernel config at one batch size, for one shape on one device/software stack."""

    __tablename__ = "kernel_measurements"
    __table_args__ = (
        UniqueConstraint(
            "kernel",
            "kernel_source",
            "device_name",
            "triton_version",
            "bench_method",
            "shape_key",
            "batch_size",
            "config_key",
            name="uq_kernel_measurements_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kernel: Mapped[str] = mapped_column(String)
    kernel_source: Mapped[str] = mapped_column(String)
    device_name: Mapped[str] = mapped_column(String)
    triton_version: Mapped[str] = mapped_column(String)
    bench_method: Mapped[str] = mapped_column(String)
    shape_key: Mapped[str] = mapped_column(String)
    batch_size: Mapped[int] = mapped_column(Integer)
    config_key: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    latency_us: Mapped[float | None] = mapped_column(Float)
    latency_spread_us: Mapped[float | None] = mapped_column(Float)
    max_rel_error: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(Text)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # graph replays the median is over: a quick search sample or a final re-timing (0: not timed)
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)


class KernelSweep(Base):
    """One sweep of a kernel over batch sizes for one model/parallelism/device; resumed by its unique key."""

    __tablename__ = "kernel_sweeps"
    __table_args__ = (
        UniqueConstraint(
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
            name="uq_kernel_sweeps_key",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    status: Mapped[str] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    tp: Mapped[int] = mapped_column(Integer)
    ep: Mapped[int] = mapped_column(Integer)
    shared_experts_fusion: Mapped[bool] = mapped_column(Boolean)
    dtype: Mapped[str] = mapped_column(String)
    kernel: Mapped[str] = mapped_column(String)
    kernel_source: Mapped[str] = mapped_column(String)
    device_name: Mapped[str] = mapped_column(String)
    triton_version: Mapped[str] = mapped_column(String)
    torch_version: Mapped[str] = mapped_column(String)
    bench_method: Mapped[str] = mapped_column(String)
    shape: Mapped[dict[str, Any]] = mapped_column(JSON)
    shape_key: Mapped[str] = mapped_column(String)
    batch_sizes: Mapped[list[int]] = mapped_column(JSON)
    strategy: Mapped[str] = mapped_column(String)
    engine_version: Mapped[str | None] = mapped_column(String)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    notes: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)


class KernelBestConfig(Base):
    """The fastest correct config of a sweep at one batch size (what the engines' JSON file gets)."""

    __tablename__ = "kernel_best_configs"
    __table_args__ = (UniqueConstraint("sweep_id", "batch_size", name="uq_kernel_best_configs_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("kernel_sweeps.id", ondelete="CASCADE"))
    batch_size: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_key: Mapped[str] = mapped_column(String)
    latency_us: Mapped[float] = mapped_column(Float)
    default_latency_us: Mapped[float | None] = mapped_column(Float)
    # the down GEMM's own config (SGLang `_down` files); NULL: the up config serves both GEMMs
    down_config: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)
    # what the engine ran at this M before tuning (its shipped file through its own lookup, else its default)
    engine_config: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)
    engine_source: Mapped[str | None] = mapped_column(String)
    engine_latency_us: Mapped[float | None] = mapped_column(Float)
    # the best single config for both GEMMs (what engines without `_down` files get)
    single_config: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)
    single_latency_us: Mapped[float | None] = mapped_column(Float)
    # True: nothing beat the engine's own choice beyond the noise, so that choice is what gets exported
    kept_engine_choice: Mapped[bool | None] = mapped_column(Boolean)
    noise_us: Mapped[float | None] = mapped_column(Float)


class BenchRun(Base):
    """One `tuner bench` run: an engine launched with flags, driven by a workload, its metrics scraped."""

    __tablename__ = "bench_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    engine: Mapped[str] = mapped_column(String)
    engine_version: Mapped[str | None] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    gpu: Mapped[str | None] = mapped_column(String)
    flags: Mapped[Any] = mapped_column(JSON)
    env: Mapped[Any] = mapped_column(JSON)
    workload: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String)
    failure_kind: Mapped[str | None] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(Text)
    client_summary: Mapped[Any | None] = mapped_column(JsonOrNull)
    engine_metrics: Mapped[Any | None] = mapped_column(JsonOrNull)
    server_info: Mapped[Any | None] = mapped_column(JsonOrNull)
    log_path: Mapped[str | None] = mapped_column(String)
    stage_seconds: Mapped[Any | None] = mapped_column(JsonOrNull)


TABLES: tuple[str, ...] = ("kernel_measurements", "kernel_sweeps", "kernel_best_configs", "bench_runs")
