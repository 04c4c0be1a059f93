"""SQLAlchemy models of flag searches: one row per study (engine, GPU, model, workload, SLOs, space) and one
per trial or re-measurement (flags, status, goodput, load steps, server info, log, stage timings).

The Optuna study of the same name lives beside these tables through Optuna's own RDB storage; these rows
add what Optuna does not keep. The schema is created by migration 0002_flag_search.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tuner.store.base import Base, JsonOrNull, UtcDateTime, utc_now


class FlagStudy(Base):
    """One `tuner flag-search` study; `name` is also the Optuna study's name."""

    __tablename__ = "flag_studies"
    __table_args__ = (UniqueConstraint("name", name="uq_flag_studies_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    status: Mapped[str] = mapped_column(String)  # running | finished | interrupted
    engine: Mapped[str] = mapped_column(String)
    engine_version: Mapped[str | None] = mapped_column(String)
    gpu: Mapped[str | None] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)
    workload: Mapped[Any] = mapped_column(JsonOrNull)
    objective: Mapped[Any] = mapped_column(JsonOrNull)  # kind, SLOs, directions, constraint names
    sampler: Mapped[str] = mapped_column(String)
    space: Mapped[Any] = mapped_column(JsonOrNull)
    load_search: Mapped[Any] = mapped_column(JsonOrNull)
    settings: Mapped[Any | None] = mapped_column(JsonOrNull)  # trials, repeats, top-k, seed, time scale
    owner: Mapped[str | None] = mapped_column(String)  # host:pid of the process running it
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[Any | None] = mapped_column(JsonOrNull)  # best config, gain over the baseline


class FlagTrial(Base):
    """One evaluation of a candidate: a search trial (kind 'search') or a re-measurement ('remeasure')."""

    __tablename__ = "flag_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_number", "kind", "attempt", name="uq_flag_trials_key"),
        # the service's paged reads of 100 000 trials (migration 0009): counts and filters by status, best first,
        # and the newest finish (whether a study changed)
        Index("ix_flag_trials_study_status", "study_id", "kind", "status"),
        Index("ix_flag_trials_study_goodput", "study_id", "goodput_tok_s"),
        Index("ix_flag_trials_study_finished", "study_id", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("flag_studies.id", ondelete="CASCADE"))
    trial_number: Mapped[int] = mapped_column(Integer)  # the Optuna trial number
    kind: Mapped[str] = mapped_column(String)  # search | remeasure
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utc_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # running | ok | infeasible | failed | skipped (predicted infeasible) | duplicate
    status: Mapped[str] = mapped_column(String)
    failure_kind: Mapped[str | None] = mapped_column(String)
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[Any] = mapped_column(JsonOrNull)
    flags: Mapped[Any] = mapped_column(JsonOrNull)
    env: Mapped[Any] = mapped_column(JsonOrNull)
    notes: Mapped[Any | None] = mapped_column(JsonOrNull)
    argv: Mapped[Any | None] = mapped_column(JsonOrNull)
    engine_version: Mapped[str | None] = mapped_column(String)
    gpu: Mapped[str | None] = mapped_column(String)
    values: Mapped[Any | None] = mapped_column(JsonOrNull)  # Optuna objective values
    constraints: Mapped[Any | None] = mapped_column(JsonOrNull)
    goodput_tok_s: Mapped[float | None] = mapped_column(Float)
    goodput_req_s: Mapped[float | None] = mapped_column(Float)
    max_load: Mapped[float | None] = mapped_column(Float)
    searches: Mapped[Any | None] = mapped_column(JsonOrNull)  # load searches: steps with their figures
    server_info: Mapped[Any | None] = mapped_column(JsonOrNull)
    log_path: Mapped[str | None] = mapped_column(String)
    log_tail: Mapped[str | None] = mapped_column(Text)
    stage_seconds: Mapped[Any | None] = mapped_column(JsonOrNull)


FLAG_TABLES: tuple[str, ...] = ("flag_studies", "flag_trials")
