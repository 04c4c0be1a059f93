"""SQLAlchemy models of jobs and their work units: the queue any worker on any host claims units from.

A job (a kernel sweep, a flag search, an export) is split into units; a worker holds a unit under a lease
that it extends by heartbeats. The functions using these rows are in `tuner.jobs.units`; the schema is
created by migrations 0005_work_units and 0007_jobs_in_order.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tuner.store.base import Base, JsonOrNull, UtcDateTime, utc_now


class Job(Base):
    """One job: its kind, its spec, and a state derived from its units (or `cancelled`)."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("key", name="uq_jobs_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String)  # creating a job with the same key again finds this row
    kind: Mapped[str] = mapped_column(String)  # e.g. kernel_sweep | flag_search | export
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String)  # queued | running | finished | failed | cancelled
    max_attempts: Mapped[int] = mapped_column(Integer)  # claims of one unit before it is failed
    # units claimed one at a time in their order (0007_jobs_in_order): a flag search's launches
    in_order: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa.false())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    error: Mapped[str | None] = mapped_column(Text)


class WorkUnit(Base):
    """One unit of a job (a batch size of a sweep, an engine launch), held by at most one worker at a time."""

    __tablename__ = "work_units"
    __table_args__ = (
        UniqueConstraint("job_id", "key", name="uq_work_units_key"),
        Index("ix_work_units_state_id", "state", "id"),  # claiming: the oldest claimable unit
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String)  # unique within the job, e.g. "M=256"
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String)  # queued | claimed | done | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far
    worker_id: Mapped[str | None] = mapped_column(String)  # the holder while claimed; the last one after
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonOrNull)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


JOB_TABLES: tuple[str, ...] = ("jobs", "work_units")
