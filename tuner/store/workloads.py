"""Store API of learned workloads and drift checks: plain functions taking a `Database`, frozen records out.

A workload is written in one transaction after it has been fitted in full, so a failed learn stores nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from tuner.errors import WorkloadError
from tuner.store.db import Database
from tuner.store.workload_models import DriftCheck, LearnedWorkload
from tuner.workload_model import WorkloadModel


@dataclass(frozen=True)
class LearnedWorkloadRecord:
    name: str
    engine: str
    source: str
    source_ref: str
    window_start: dt.datetime
    window_end: dt.datetime
    window_s: float
    fingerprint: str
    model: WorkloadModel
    created_at: dt.datetime


@dataclass(frozen=True)
class DriftCheckRecord:
    id: int
    deployment: str
    baseline: str
    live_workload: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    drifted: bool
    drift_score: float
    scores: dict[str, float]
    reasons: tuple[str, ...]
    job_id: int | None
    held_by_cooldown: bool
    checked_at: dt.datetime


def _utc(t_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t_s, dt.UTC)


def _record(row: LearnedWorkload) -> LearnedWorkloadRecord:
    return LearnedWorkloadRecord(row.name, row.engine, row.source, row.source_ref, row.window_start,
                                 row.window_end, row.window_s, row.fingerprint, WorkloadModel.from_json(row.model),
                                 row.created_at)


def save_workload(db: Database, name: str, model: WorkloadModel, source: str, source_ref: str, *,
                  replace: bool = False) -> LearnedWorkloadRecord:
    """Store `model` as `name`. Saving the same model (same fingerprint) again is a no-op; another model
    under a taken name is a WorkloadError unless `replace`."""
    if not name or not name.strip() or ":" in name:
        raise WorkloadError(f"workload name {name!r} must be non-empty and must not contain ':'")
    fingerprint = model.fingerprint()

    def work(session: Session) -> LearnedWorkloadRecord:
        row = session.scalars(sa.select(LearnedWorkload).where(LearnedWorkload.name == name)).one_or_none()
        if row is not None and row.fingerprint != fingerprint:
            if not replace:
                raise WorkloadError(f"a workload named {name!r} exists (learned {row.created_at:%Y-%m-%d %H:%M} "
                                    f"from {row.source_ref}); pick another --name or pass --replace")
            session.delete(row)
            session.flush()
            row = None
        if row is None:
            row = LearnedWorkload(name=name, engine=model.engine, source=source, source_ref=source_ref,
                                  window_start=_utc(model.window_start_s), window_end=_utc(model.window_end_s),
                                  window_s=model.window_s, fingerprint=fingerprint, model=model.to_json())
            session.add(row)
            session.flush()
        return _record(row)

    try:
        return db.transaction(work, retry_conflicts=True)
    except sa_exc.IntegrityError:
        raise WorkloadError(f"another process stored a workload named {name!r} at the same time") from None


def load_workload(db: Database, name: str) -> LearnedWorkloadRecord:
    """The workload stored as `name`; WorkloadError (listing the known names) when there is none."""

    def work(session: Session) -> LearnedWorkloadRecord:
        row = session.scalars(sa.select(LearnedWorkload).where(LearnedWorkload.name == name)).one_or_none()
        if row is None:
            known = session.scalars(sa.select(LearnedWorkload.name).order_by(LearnedWorkload.name)).all()
            hint = ", ".join(known[:20]) if known else "none yet; create one with `tuner workload learn`"
            raise WorkloadError(f"no learned workload named {name!r} (known: {hint})")
        return _record(row)

    return db.transaction(work, read_only=True)


def list_workloads(db: Database) -> list[LearnedWorkloadRecord]:
    def work(session: Session) -> list[LearnedWorkloadRecord]:
        rows = session.scalars(sa.select(LearnedWorkload).order_by(LearnedWorkload.name)).all()
        return [_record(r) for r in rows]

    return db.transaction(work, read_only=True)


def record_drift_check(db: Database, **fields: Any) -> DriftCheckRecord:
    def work(session: Session) -> DriftCheckRecord:
        row = DriftCheck(**fields)
        session.add(row)
        session.flush()
        return _check(row)

    return db.transaction(work)


def _check(row: DriftCheck) -> DriftCheckRecord:
    return DriftCheckRecord(row.id, row.deployment, row.baseline, row.live_workload, row.window_start,
                            row.window_end, row.drifted, row.drift_score, dict(row.scores), tuple(row.reasons),
                            row.job_id, row.held_by_cooldown, row.checked_at)


def last_retune(db: Database, deployment: str) -> DriftCheckRecord | None:
    """The latest check of `deployment` that queued a re-tune job."""

    def work(session: Session) -> DriftCheckRecord | None:
        row = session.scalars(
            sa.select(DriftCheck).where(DriftCheck.deployment == deployment, DriftCheck.job_id.is_not(None))
            .order_by(DriftCheck.checked_at.desc(), DriftCheck.id.desc()).limit(1)
        ).one_or_none()
        return None if row is None else _check(row)

    return db.transaction(work, read_only=True)


def drift_checks(db: Database, deployment: str) -> list[DriftCheckRecord]:
    def work(session: Session) -> list[DriftCheckRecord]:
        rows = session.scalars(sa.select(DriftCheck).where(DriftCheck.deployment == deployment)
                               .order_by(DriftCheck.id)).all()
        return [_check(r) for r in rows]

    return db.transaction(work, read_only=True)
