"""Flag searches in the store: studies (who runs them, what they search, their result) and trials (one row
per evaluation, written when it starts and again when it ends, so a killed process leaves a 'running' row
that the next run marks failed).

Plain functions taking a `Database`; frozen dataclasses come out. Knows nothing of Optuna or engines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tuner.store.base import JsonObject
from tuner.store.db import Database
from tuner.store.flag_models import FlagStudy, FlagTrial
from tuner.store.flag_results import StoredResultError, StudyResult
from tuner.store.models import utc_now

TRIAL_STATUSES = ("running", "ok", "infeasible", "failed", "skipped", "duplicate")
STUDY_STATUSES = ("running", "finished", "interrupted")


@dataclass(frozen=True)
class FlagStudyRecord:
    id: int
    name: str
    created_at: dt.datetime
    updated_at: dt.datetime
    status: str
    engine: str
    engine_version: str | None
    gpu: str | None
    model: str
    workload: JsonObject
    objective: JsonObject  # kind, SLOs, directions, constraint names
    sampler: str
    space: JsonObject
    load_search: JsonObject
    settings: JsonObject | None  # trials, repeats, top-k, seed, engine options, time scale
    owner: str | None
    heartbeat_at: dt.datetime | None
    result: StudyResult | None  # best config, baseline, ranking, gain (None until the first step ends)


@dataclass(frozen=True)
class FlagTrialRecord:
    id: int
    study_id: int
    trial_number: int
    kind: str
    attempt: int
    is_baseline: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None
    status: str
    failure_kind: str | None
    error: str | None
    params: JsonObject
    flags: JsonObject
    env: dict[str, str]
    notes: list[str] | None
    argv: list[str] | None
    engine_version: str | None
    gpu: str | None
    values: list[float] | None  # Optuna objective values (re-measurements: one goodput per load search)
    constraints: list[float] | None
    goodput_tok_s: float | None
    goodput_req_s: float | None
    max_load: float | None
    searches: list[JsonObject] | None  # LoadSearchResult.to_dict() per load search
    server_info: JsonObject | None
    log_path: str | None
    log_tail: str | None
    stage_seconds: dict[str, float] | None


def _study_record(row: FlagStudy) -> FlagStudyRecord:
    values = {f.name: getattr(row, f.name) for f in fields(FlagStudyRecord)}
    if row.result is not None:
        try:
            values["result"] = StudyResult.from_json(row.result)
        except StoredResultError as exc:
            raise StoredResultError(f"the stored result of flag study {row.name!r} cannot be read ({exc}); "
                                    "run the study again to rewrite it") from None
    return FlagStudyRecord(**values)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    """Column values of a study: a StudyResult as its JSON document."""
    result = values.get("result")
    if result is not None and not isinstance(result, StudyResult):
        raise TypeError(f"a study's result is a StudyResult, not {type(result).__name__}")
    return {**values, "result": result.to_json()} if isinstance(result, StudyResult) else values


def _trial_record(row: FlagTrial) -> FlagTrialRecord:
    return FlagTrialRecord(**{f.name: getattr(row, f.name) for f in fields(FlagTrialRecord)})


_STUDY_FIELDS = {f.name for f in fields(FlagStudyRecord)} - {"id", "created_at", "updated_at"}
_TRIAL_RESULT_FIELDS = {f.name for f in fields(FlagTrialRecord)} - {
    "id", "study_id", "trial_number", "kind", "attempt", "is_baseline", "created_at"}


def get_study(db: Database, name: str) -> FlagStudyRecord | None:
    def work(session: Session) -> FlagStudyRecord | None:
        row = session.scalar(sa.select(FlagStudy).where(FlagStudy.name == name))
        return None if row is None else _study_record(row)

    return db.transaction(work, read_only=True)


def create_study(db: Database, **values: Any) -> FlagStudyRecord:
    """Insert a study (name, engine, model, sampler, ... as in FlagStudyRecord); status defaults to running."""
    unknown = set(values) - _STUDY_FIELDS
    if unknown:
        raise TypeError(f"create_study() got unknown field(s): {', '.join(sorted(unknown))}")
    values.setdefault("status", "running")

    def work(session: Session) -> FlagStudyRecord:
        row = FlagStudy(**_stored(values))
        session.add(row)
        session.flush()
        return _study_record(row)

    return db.transaction(work)


def update_study(db: Database, study_id: int, **values: Any) -> None:
    unknown = set(values) - _STUDY_FIELDS
    if unknown:
        raise TypeError(f"update_study() got unknown field(s): {', '.join(sorted(unknown))}")
    if "status" in values and values["status"] not in STUDY_STATUSES:
        raise ValueError(f"unknown study status {values['status']!r}")

    def work(session: Session) -> None:
        row = session.get(FlagStudy, study_id)
        if row is None:
            raise KeyError(f"no flag study with id {study_id}")
        for key, value in _stored(values).items():
            setattr(row, key, value)
        row.updated_at = utc_now()

    db.transaction(work)


def claim_study(db: Database, study_id: int, owner: str, is_alive: Callable[[str], bool]) -> str | None:
    """Make `owner` the process running the study. Returns the other owner when one is still alive (then
    nothing changes), else None. `is_alive(owner)` decides whether a recorded owner still runs."""

    def work(session: Session) -> str | None:
        row = session.get(FlagStudy, study_id)
        if row is None:
            raise KeyError(f"no flag study with id {study_id}")
        if row.owner and row.owner != owner and is_alive(row.owner):
            return row.owner
        row.owner = owner
        row.heartbeat_at = utc_now()
        row.status = "running"
        return None

    return db.transaction(work)


def release_study(db: Database, study_id: int, owner: str, status: str) -> None:
    """Clear the owner (if it is still `owner`) and set the study's status."""

    def work(session: Session) -> None:
        row = session.get(FlagStudy, study_id)
        if row is not None and row.owner == owner:
            row.owner = None
            row.status = status
            row.updated_at = utc_now()

    db.transaction(work)


def heartbeat(db: Database, study_id: int) -> None:
    def work(session: Session) -> None:
        row = session.get(FlagStudy, study_id)
        if row is not None:
            row.heartbeat_at = utc_now()

    db.transaction(work)


def start_trial(db: Database, study_id: int, trial_number: int, *, kind: str = "search", attempt: int = 0,
                is_baseline: bool = False, params: Any = None, flags: Any = None, env: Any = None,
                notes: Any = None) -> int:
    """Write a 'running' row before an evaluation starts (replacing an earlier row with the same key)."""

    def work(session: Session) -> int:
        session.execute(sa.delete(FlagTrial).where(
            FlagTrial.study_id == study_id, FlagTrial.trial_number == trial_number, FlagTrial.kind == kind,
            FlagTrial.attempt == attempt))
        row = FlagTrial(study_id=study_id, trial_number=trial_number, kind=kind, attempt=attempt,
                        is_baseline=is_baseline, status="running", params=params or {}, flags=flags or {},
                        env=env or {}, notes=notes)
        session.add(row)
        session.flush()
        return row.id

    return db.transaction(work)


def finish_trial(db: Database, trial_id: int, **values: Any) -> None:
    """Record how an evaluation ended (status, failure_kind, goodput, searches, server_info, ...)."""
    unknown = set(values) - _TRIAL_RESULT_FIELDS
    if unknown:
        raise TypeError(f"finish_trial() got unknown field(s): {', '.join(sorted(unknown))}")
    if values.get("status") not in TRIAL_STATUSES:
        raise ValueError(f"unknown trial status {values.get('status')!r}; expected one of "
                         f"{', '.join(TRIAL_STATUSES)}")

    def work(session: Session) -> None:
        row = session.get(FlagTrial, trial_id)
        if row is None:
            raise KeyError(f"no flag trial with id {trial_id}")
        for key, value in values.items():
            setattr(row, key, value)
        row.finished_at = values.get("finished_at") or utc_now()

    db.transaction(work)


def fail_running_trials(db: Database, study_id: int, reason: str) -> list[FlagTrialRecord]:
    """Mark the study's 'running' rows (left by a process that died) as failed/interrupted."""

    def work(session: Session) -> list[FlagTrialRecord]:
        rows = list(session.scalars(sa.select(FlagTrial).where(
            FlagTrial.study_id == study_id, FlagTrial.status == "running")))
        for row in rows:
            row.status = "failed"
            row.failure_kind = "interrupted"
            row.error = reason
            row.finished_at = utc_now()
        session.flush()
        return [_trial_record(r) for r in rows]

    return db.transaction(work)


def list_trials(db: Database, study_id: int, kind: str | None = None) -> list[FlagTrialRecord]:
    """The study's trials in trial-number order (re-measurements by attempt)."""

    def work(session: Session) -> list[FlagTrialRecord]:
        q = sa.select(FlagTrial).where(FlagTrial.study_id == study_id)
        if kind is not None:
            q = q.where(FlagTrial.kind == kind)
        q = q.order_by(FlagTrial.kind, FlagTrial.trial_number, FlagTrial.attempt)
        return [_trial_record(r) for r in session.scalars(q)]

    return db.transaction(work, read_only=True)


def list_studies(db: Database) -> list[FlagStudyRecord]:
    """Every flag study, newest first."""

    def work(session: Session) -> list[FlagStudyRecord]:
        rows = session.scalars(sa.select(FlagStudy).order_by(FlagStudy.created_at.desc(), FlagStudy.id.desc()))
        return [_study_record(r) for r in rows]

    return db.transaction(work, read_only=True)


def trial_counts(db: Database, study_id: int) -> dict[str, int]:
    """Search trials per status."""

    def work(session: Session) -> dict[str, int]:
        rows = session.execute(sa.select(FlagTrial.status, sa.func.count()).where(
            FlagTrial.study_id == study_id, FlagTrial.kind == "search").group_by(FlagTrial.status))
        return {str(status): int(n) for status, n in rows}

    return db.transaction(work, read_only=True)
