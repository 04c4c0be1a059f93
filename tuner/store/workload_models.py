"""SQLAlchemy models of learned workloads and of the drift checks `tuner watch` makes against them.

The functions using these rows are in `tuner.store.workloads`; the schema is created by migration
0006_workloads. Keep the two in step (a test compares them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tuner.store.base import Base, JsonOrNull, UtcDateTime, utc_now


class LearnedWorkload(Base):
    """One fitted workload model under a user-given name, with where and over which window it was learned."""

    __tablename__ = "learned_workloads"
    __table_args__ = (UniqueConstraint("name", name="uq_learned_workloads_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    engine: Mapped[str] = mapped_column(String)  # sglang | vllm | unknown
    source: Mapped[str] = mapped_column(String)  # prometheus | snapshots | request-log
    source_ref: Mapped[str] = mapped_column(Text)  # URL + selector, or a path
    window_start: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    window_end: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    window_s: Mapped[float] = mapped_column(Float)
    fingerprint: Mapped[str] = mapped_column(String)
    model: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)


class DriftCheck(Base):
    """One comparison of live traffic with a deployment's baseline workload: scores, reasons, and the
    re-tune job it queued (None when it did not drift or a cool-down held the re-tune back)."""

    __tablename__ = "workload_drift_checks"
    __table_args__ = (Index("ix_workload_drift_checks_deployment", "deployment", "checked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment: Mapped[str] = mapped_column(String)
    baseline: Mapped[str] = mapped_column(String)  # learned workload name
    baseline_fingerprint: Mapped[str] = mapped_column(String)
    live_workload: Mapped[str | None] = mapped_column(String)  # stored when it drifted
    window_start: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    window_end: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    drifted: Mapped[bool] = mapped_column(Boolean)
    drift_score: Mapped[float] = mapped_column(Float)  # the largest score / threshold ratio (>= 1: drift)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[Any]] = mapped_column(JSON)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    held_by_cooldown: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)
    checked_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)


WORKLOAD_TABLES: tuple[str, ...] = ("learned_workloads", "workload_drift_checks")
