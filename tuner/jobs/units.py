"""Jobs split into work units in the database, which any number of workers on any number of hosts share.

A worker claims the oldest claimable unit under a lease, extends the lease by heartbeats while it works, then
completes or fails the unit; a unit whose lease runs out (its worker died) is claimed again by another worker,
up to the job's attempt cap. Plain functions taking a `Database`; frozen records come out, ORM rows stay
inside. Knows nothing of what a unit does: job kinds and their runners live elsewhere.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from tuner.errors import JobError, LeaseLostError
from tuner.store.base import record_of
from tuner.store.db import Database
from tuner.store.job_models import Job, WorkUnit
from tuner.store.models import utc_now

JOB_STATES: tuple[str, ...] = ("queued", "running", "finished", "failed", "cancelled")
UNIT_STATES: tuple[str, ...] = ("queued", "claimed", "done", "failed", "cancelled")
DEFAULT_LEASE_S = 60.0  # a worker heartbeats well within this (every lease_s / 3 or so)
DEFAULT_MAX_ATTEMPTS = 3  # claims of one unit (its first included) before an expired lease fails it

Json: TypeAlias = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject: TypeAlias = dict[str, Json]


@dataclass(frozen=True)
class JobRecord:
    id: int
    key: str  # creating a job with this key again returns this job
    kind: str  # e.g. "kernel_sweep", "flag_search", "export"
    spec: JsonObject
    state: str  # one of JOB_STATES
    max_attempts: int
    error: str | None  # why it failed or was cancelled
    created_at: dt.datetime
    updated_at: dt.datetime
    in_order: bool = False  # its units are claimed one at a time, in their order


@dataclass(frozen=True)
class UnitRecord:
    id: int
    job_id: int
    key: str  # unique within the job, e.g. "M=256"
    payload: JsonObject
    state: str  # one of UNIT_STATES
    attempts: int  # claims so far
    worker_id: str | None  # the holder while claimed; afterwards the last one
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    result: JsonObject | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class Claim:
    """A unit a worker now holds, with its job (whose kind and spec say how to run it)."""

    unit: UnitRecord
    job: JobRecord


@dataclass(frozen=True)
class JobProgress:
    """A job and how many of its units are in each state."""

    job: JobRecord
    queued: int
    claimed: int
    done: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.queued + self.claimed + self.done + self.failed + self.cancelled


@dataclass(frozen=True)
class WorkerStatus:
    """A worker that holds at least one unit under a live lease."""

    worker_id: str
    unit_ids: tuple[int, ...]
    last_heartbeat_at: dt.datetime
    lease_expires_at: dt.datetime  # the latest of its leases


def new_worker_id() -> str:
    """A worker id unique across hosts and processes: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def job_key(kind: str, spec: Mapping[str, Json]) -> str:
    """The default key of a job: its kind and a hash of its spec, so planning the same job twice finds one."""
    digest = hashlib.sha256(_canonical(_json_object(spec, "the job spec")).encode()).hexdigest()
    return f"{kind}:{digest[:16]}"


# ------------------------------------------------------------------------------------------------- jobs


def create_job(
    db: Database,
    kind: str,
    spec: Mapping[str, Json],
    units: Iterable[tuple[str, Mapping[str, Json]]],
    *,
    key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    in_order: bool = False,
) -> JobRecord:
    """Create a job with its units (queued in the order given), or return the job that has this key already.

    `key` defaults to `job_key(kind, spec)`. Creating an existing job again adds the units it lacks (a
    resumed sweep with more batch sizes) and leaves the others as they are; a different kind, spec or unit
    payload under the same key is a JobError, and so is adding units to a cancelled job. With `in_order`, a
    unit is only claimable once every unit before it has ended (each depends on the ones before: a flag
    search's launches); a unit taken over after its worker died is still the first.
    """
    kind = _name(kind, "job kind")
    spec_json = _json_object(spec, "the job spec")
    key = job_key(kind, spec_json) if key is None else _name(key, "job key")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise JobError(f"max_attempts must be a whole number >= 1, not {max_attempts!r}")
    planned: dict[str, JsonObject] = {}
    for unit_key, payload in units:
        unit_key = _name(unit_key, "unit key")
        if unit_key in planned:
            raise JobError(f"unit key {unit_key!r} appears twice in job {key!r}: unit keys must be unique")
        planned[unit_key] = _json_object(payload, f"the payload of unit {unit_key!r}")

    def work(session: Session) -> JobRecord:
        job = session.scalars(
            sa.select(Job).where(Job.key == key).with_for_update().execution_options(populate_existing=True)
        ).one_or_none()
        if job is None:
            job = Job(key=key, kind=kind, spec=spec_json, state="queued", max_attempts=max_attempts,
                      in_order=bool(in_order))
            session.add(job)
            session.flush()
            existing: dict[str, JsonObject] = {}
        else:
            if job.kind != kind or _canonical(job.spec) != _canonical(spec_json):
                raise JobError(
                    f"job {key!r} exists with another kind or spec ({job.kind}); give the new job its own key"
                )
            existing = dict(
                session.execute(
                    sa.select(WorkUnit.key, WorkUnit.payload).where(WorkUnit.job_id == job.id)
                ).all()
            )
            for unit_key, payload in planned.items():
                if unit_key in existing and _canonical(existing[unit_key]) != _canonical(payload):
                    raise JobError(f"unit {unit_key!r} of job {key!r} exists with another payload")
            if job.state == "cancelled" and planned.keys() - existing.keys():
                raise JobError(f"job {key!r} was cancelled: give the new job its own key")
        for unit_key, payload in planned.items():
            if unit_key not in existing:
                session.add(
                    WorkUnit(job_id=job.id, key=unit_key, payload=payload, state="queued", attempts=0)
                )
        session.flush()
        _refresh_job_state(session, job)
        return _job_record(job)

    # Two processes creating one job at once: the second one's INSERT hits the unique key; run it again.
    return db.transaction(work, retry_conflicts=True)


def get_job(db: Database, job_id: int) -> JobRecord:
    def work(session: Session) -> JobRecord:
        return _job_record(_job_row(session, job_id))

    return db.transaction(work, read_only=True)


def find_job(db: Database, key: str) -> JobRecord | None:
    def work(session: Session) -> JobRecord | None:
        job = session.scalars(sa.select(Job).where(Job.key == key)).one_or_none()
        return None if job is None else _job_record(job)

    return db.transaction(work, read_only=True)


def list_jobs(
    db: Database, *, kinds: Collection[str] | None = None, states: Collection[str] | None = None
) -> list[JobRecord]:
    """Jobs oldest first, optionally only those of some kinds or in some states."""
    query = sa.select(Job).order_by(Job.id)
    if kinds is not None:
        query = query.where(Job.kind.in_(_kinds(kinds)))
    if states is not None:
        query = query.where(Job.state.in_(_states(states, JOB_STATES, "job")))

    def work(session: Session) -> list[JobRecord]:
        return [_job_record(job) for job in session.scalars(query)]

    return db.transaction(work, read_only=True)


def cancel_job(db: Database, job_id: int, reason: str | None = None) -> JobRecord:
    """Cancel a job: its queued and claimed units become `cancelled`, and their workers' next heartbeat raises
    LeaseLostError. A job that has ended already (finished, failed, cancelled) is returned unchanged."""

    def work(session: Session) -> JobRecord:
        # Units before the job, as claim and complete lock them, so two of them never wait on each other.
        open_units = session.scalars(
            sa.select(WorkUnit.id)
            .where(WorkUnit.job_id == job_id, WorkUnit.state.in_(("queued", "claimed")))
            .order_by(WorkUnit.id)
            .with_for_update()
        ).all()
        job = _job_row(session, job_id, lock=True)
        if job.state in ("finished", "failed", "cancelled"):
            return _job_record(job)
        why = f"cancelled: {reason}" if reason else "cancelled"
        if open_units:
            session.execute(
                sa.update(WorkUnit)
                .where(WorkUnit.id.in_(open_units))
                .values(state="cancelled", lease_expires_at=None, error=why)
                .execution_options(synchronize_session=False)
            )
        job.state = "cancelled"
        job.error = why
        session.flush()
        return _job_record(job)

    return db.transaction(work)


def job_progress(db: Database, job_id: int) -> JobProgress:
    def work(session: Session) -> JobProgress:
        job = _job_row(session, job_id)
        return _progress(job, _unit_counts(session, job_id))

    return db.transaction(work, read_only=True)


def list_progress(db: Database, *, states: Collection[str] | None = None) -> list[JobProgress]:
    """Every job (optionally only those in some states) with its units counted by state, oldest first."""
    query = sa.select(Job).order_by(Job.id)
    if states is not None:
        query = query.where(Job.state.in_(_states(states, JOB_STATES, "job")))

    def work(session: Session) -> list[JobProgress]:
        jobs = session.scalars(query).all()
        counts: dict[int, dict[str, int]] = {job.id: {} for job in jobs}
        rows = session.execute(
            sa.select(WorkUnit.job_id, WorkUnit.state, sa.func.count()).group_by(
                WorkUnit.job_id, WorkUnit.state
            )
        )
        for job_id, state, n in rows:
            if job_id in counts:
                counts[job_id][state] = n
        return [_progress(job, counts[job.id]) for job in jobs]

    return db.transaction(work, read_only=True)


# ------------------------------------------------------------------------------------------------ units


def list_units(db: Database, job_id: int, *, states: Collection[str] | None = None) -> list[UnitRecord]:
    """The units of a job in their queue order."""
    query = sa.select(WorkUnit).where(WorkUnit.job_id == job_id).order_by(WorkUnit.id)
    if states is not None:
        query = query.where(WorkUnit.state.in_(_states(states, UNIT_STATES, "unit")))

    def work(session: Session) -> list[UnitRecord]:
        _job_row(session, job_id)
        return [_unit_record(unit) for unit in session.scalars(query)]

    return db.transaction(work, read_only=True)


def claim_unit(
    db: Database, worker_id: str, *, kinds: Collection[str] | None = None, lease_s: float = DEFAULT_LEASE_S,
    job_ids: Collection[int] | None = None,
) -> Claim | None:
    """Claim the oldest unit that is queued or whose lease has expired (of a job of one of `kinds`, and one of
    `job_ids`, if given); None when there is none. The worker holds it for `lease_s` seconds, extended by `heartbeat`.

    Claiming again after an expired lease counts another attempt; a unit whose lease expires after its job's
    `max_attempts` claims is failed instead ("lease expired ..."), and the next unit is tried. Race-free
    across processes and hosts: on PostgreSQL the candidate row is locked with FOR UPDATE SKIP LOCKED (two
    workers never wait on each other, nor get the same unit), on SQLite the transaction holds the write lock
    (BEGIN IMMEDIATE); on both the UPDATE checks the state it read, and a lost race moves on.
    """
    worker_id = _name(worker_id, "worker id")
    lease = _lease(lease_s)
    kind_list = None if kinds is None else _kinds(kinds)

    def work(session: Session) -> Claim | Literal[True] | None:
        """A Claim; None when nothing is claimable; True to look again (a unit was failed, or a race lost)."""
        now = _now(session)
        query = (
            sa.select(WorkUnit.id, WorkUnit.state, WorkUnit.attempts, WorkUnit.worker_id, Job.max_attempts)
            .join(Job, Job.id == WorkUnit.job_id)
            .where(
                sa.or_(
                    WorkUnit.state == "queued",
                    sa.and_(WorkUnit.state == "claimed", WorkUnit.lease_expires_at < now),
                )
            )
            .order_by(WorkUnit.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=WorkUnit)
        )
        if kind_list is not None:
            query = query.where(Job.kind.in_(kind_list))
        if job_ids is not None:
            query = query.where(Job.id.in_([int(j) for j in job_ids]))
        earlier = aliased(WorkUnit)
        open_before = (sa.select(earlier.id).where(earlier.job_id == WorkUnit.job_id, earlier.id < WorkUnit.id,
                                                   earlier.state.in_(("queued", "claimed"))).exists())
        query = query.where(sa.or_(Job.in_order.is_(False), ~open_before))
        row = session.execute(query).first()
        if row is None:
            return None
        unit_id, state, attempts, last_worker, max_attempts = row
        same = sa.update(WorkUnit).where(
            WorkUnit.id == unit_id, WorkUnit.state == state, WorkUnit.attempts == attempts
        )
        if state == "claimed" and attempts >= max_attempts:
            error = (
                f"lease expired {attempts} times without a heartbeat (last worker {last_worker}): "
                f"given up after max_attempts={max_attempts}"
            )
            values: dict[str, object] = {"state": "failed", "error": error, "lease_expires_at": None}
        else:
            values = {
                "state": "claimed",
                "worker_id": worker_id,
                "attempts": attempts + 1,
                "lease_expires_at": now + lease,
                "heartbeat_at": now,
                "error": None,
            }
        if _update(session, same.values(**values)) == 0:
            return True  # another worker changed it between our read and our write
        unit = _unit_row(session, unit_id)
        job = _job_row(session, unit.job_id, lock=True)
        _refresh_job_state(session, job)
        return Claim(_unit_record(unit), _job_record(job)) if values["state"] == "claimed" else True

    while True:
        outcome = db.transaction(work)
        if outcome is not True:
            return outcome


def heartbeat(db: Database, unit_id: int, worker_id: str, *, lease_s: float = DEFAULT_LEASE_S) -> UnitRecord:
    """Extend the lease of a unit `worker_id` holds to `lease_s` seconds from now.

    Raises LeaseLostError when the worker no longer holds it (it was re-claimed after the lease expired,
    cancelled, or has ended); the worker should then stop working on it. A lease that expired but was not
    re-claimed yet is still the worker's and is renewed.
    """
    lease = _lease(lease_s)

    def work(session: Session) -> UnitRecord:
        now = _now(session)
        _owned_update(
            session, unit_id, worker_id, "heartbeat", lease_expires_at=now + lease, heartbeat_at=now
        )
        return _unit_record(_unit_row(session, unit_id))

    return db.transaction(work)


def complete(
    db: Database, unit_id: int, worker_id: str, result: Mapping[str, Json] | None = None
) -> UnitRecord:
    """Mark a unit `worker_id` holds as done, with its result; LeaseLostError when the worker no longer holds
    it (then the result is not kept). The job finishes with its last unit."""
    result_json = None if result is None else _json_object(result, f"the result of unit {unit_id}")
    return _finish(db, unit_id, worker_id, "complete", state="done", result=result_json, error=None)


def fail(db: Database, unit_id: int, worker_id: str, error: str) -> UnitRecord:
    """Mark a unit `worker_id` holds as failed with `error` (not retried); LeaseLostError when it no longer
    holds it. A job whose units have all ended, one or more failed, is failed. In a job whose units run in
    order, the units after it are cancelled (each depends on the ones before); `requeue_failed` brings them
    back."""
    if not isinstance(error, str) or not error.strip():
        raise JobError("fail() needs the error text saying why the unit failed")
    return _finish(db, unit_id, worker_id, "fail", state="failed", error=error)


def release(db: Database, unit_id: int, worker_id: str) -> UnitRecord:
    """Give a held unit back to the queue without counting the attempt (a worker told to stop, Ctrl-C);
    LeaseLostError when `worker_id` no longer holds it."""

    def work(session: Session) -> UnitRecord:
        _owned_update(
            session,
            unit_id,
            worker_id,
            "release",
            state="queued",
            attempts=WorkUnit.attempts - 1,
            worker_id=None,
            lease_expires_at=None,
        )
        unit = _unit_row(session, unit_id)
        _refresh_job_state(session, _job_row(session, unit.job_id, lock=True))
        return _unit_record(unit)

    return db.transaction(work)


def requeue_failed(db: Database, job_id: int) -> int:
    """Put a job's failed units back in the queue with a fresh attempt count (running the same job again after
    fixing what failed), and the units a failure cancelled in a job that runs in order; returns how many. A
    cancelled job stays cancelled (JobError)."""

    def work(session: Session) -> int:
        job = _job_row(session, job_id, lock=True)
        if job.state == "cancelled":
            raise JobError(f"job {job_id} was cancelled; create it again instead of re-queueing its units")
        again = ("failed", "cancelled") if job.in_order else ("failed",)
        count = _update(session, sa.update(WorkUnit).where(WorkUnit.job_id == job_id, WorkUnit.state.in_(again))
                        .values(state="queued", attempts=0, worker_id=None, lease_expires_at=None, error=None))
        _refresh_job_state(session, job)
        return count

    return db.transaction(work)


def live_workers(db: Database) -> list[WorkerStatus]:
    """Workers holding units under leases that have not expired, the most recent heartbeat first.

    A worker is only seen here while it holds a unit; one between units (or idle) is not listed.
    """

    def work(session: Session) -> list[WorkerStatus]:
        now = _now(session)
        rows = session.execute(
            sa.select(WorkUnit.worker_id, WorkUnit.id, WorkUnit.heartbeat_at, WorkUnit.lease_expires_at)
            .where(WorkUnit.state == "claimed", WorkUnit.lease_expires_at >= now)
            .order_by(WorkUnit.id)
        )
        held: dict[str, list[tuple[int, dt.datetime, dt.datetime]]] = {}
        for worker, unit_id, beat, lease_end in rows:
            if worker is not None and beat is not None and lease_end is not None:
                held.setdefault(worker, []).append((unit_id, beat, lease_end))
        workers = [
            WorkerStatus(
                worker_id=worker,
                unit_ids=tuple(u for u, _, _ in units),
                last_heartbeat_at=max(b for _, b, _ in units),
                lease_expires_at=max(e for _, _, e in units),
            )
            for worker, units in held.items()
        ]
        return sorted(workers, key=lambda w: w.last_heartbeat_at, reverse=True)

    return db.transaction(work, read_only=True)


# ------------------------------------------------------------------------------------------------ inside


def _finish(db: Database, unit_id: int, worker_id: str, action: str, **values: object) -> UnitRecord:
    def work(session: Session) -> UnitRecord:
        _owned_update(session, unit_id, worker_id, action, lease_expires_at=None, **values)
        unit = _unit_row(session, unit_id)
        job = _job_row(session, unit.job_id, lock=True)
        if values.get("state") == "failed" and job.in_order:
            _update(session, sa.update(WorkUnit)
                    .where(WorkUnit.job_id == job.id, WorkUnit.id > unit_id, WorkUnit.state == "queued")
                    .values(state="cancelled", error=f"not run: unit {unit.key!r} before it failed"))
        _refresh_job_state(session, job)
        return _unit_record(unit)

    return db.transaction(work)


def _owned_update(session: Session, unit_id: int, worker_id: str, action: str, /, **values: object) -> None:
    """UPDATE the unit if `worker_id` holds it (this locks the row), else raise LeaseLostError saying why."""
    statement = (
        sa.update(WorkUnit)
        .where(WorkUnit.id == unit_id, WorkUnit.state == "claimed", WorkUnit.worker_id == worker_id)
        .values(**values)
    )
    if _update(session, statement) == 1:
        return
    unit = session.get(WorkUnit, unit_id)
    if unit is None:
        raise JobError(f"{action}: there is no work unit with id {unit_id}")
    where = f"unit {unit_id} ({unit.key!r} of job {unit.job_id})"
    if unit.state == "claimed":
        why = f"its lease expired and worker {unit.worker_id} claimed it again"
    elif unit.state == "queued":
        why = "it was given back to the queue"
    elif unit.state == "cancelled":
        why = "its job was cancelled"
    elif unit.state == "done":
        why = f"it is done already (by worker {unit.worker_id})"
    else:
        why = f"it has failed ({unit.error})"
    raise LeaseLostError(f"{action}: worker {worker_id} no longer holds {where}: {why}")


def _update(session: Session, statement: sa.Update) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _refresh_job_state(session: Session, job: Job) -> None:
    """Derive a job's state from its units; the caller holds the job's row lock, so that two workers finishing
    its last two units at once cannot both see the other's unit still running."""
    if job.state == "cancelled":
        return
    counts = _unit_counts(session, job.id)
    if counts.get("queued", 0) == 0 and counts.get("claimed", 0) == 0:
        failed = counts.get("failed", 0)
        if failed:
            first_key, first_error = session.execute(
                sa.select(WorkUnit.key, WorkUnit.error)
                .where(WorkUnit.job_id == job.id, WorkUnit.state == "failed")
                .order_by(WorkUnit.id)
                .limit(1)
            ).one()
            state = "failed"
            error: str | None = f"{failed} of {sum(counts.values())} units failed; {first_key}: {first_error}"
        else:
            state, error = "finished", None
    elif counts.get("claimed", 0) or counts.get("done", 0) or counts.get("failed", 0):
        state, error = "running", None
    else:
        state, error = "queued", None
    if (job.state, job.error) != (state, error):
        job.state, job.error = state, error
        session.flush()


def _unit_counts(session: Session, job_id: int) -> dict[str, int]:
    rows = session.execute(
        sa.select(WorkUnit.state, sa.func.count()).where(WorkUnit.job_id == job_id).group_by(WorkUnit.state)
    )
    return dict(rows.all())


def _progress(job: Job, counts: Mapping[str, int]) -> JobProgress:
    return JobProgress(_job_record(job), *(counts.get(state, 0) for state in UNIT_STATES))


def _job_row(session: Session, job_id: int, *, lock: bool = False) -> Job:
    query = sa.select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    job = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if job is None:
        raise JobError(f"there is no job with id {job_id}")
    return job


def _unit_row(session: Session, unit_id: int) -> WorkUnit:
    query = sa.select(WorkUnit).where(WorkUnit.id == unit_id).execution_options(populate_existing=True)
    return session.scalars(query).one()


def _now(session: Session) -> dt.datetime:
    """Now, by the database server's clock on PostgreSQL, so that leases mean the same on hosts whose clocks
    disagree; by this host's clock on SQLite, whose writers all run on this host."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(sa.select(sa.func.clock_timestamp()))
        assert isinstance(now, dt.datetime)
        return now.astimezone(dt.UTC)
    return utc_now()


def _lease(lease_s: float) -> dt.timedelta:
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not lease_s > 0:
        raise JobError(f"lease_s must be a positive number of seconds, not {lease_s!r}")
    return dt.timedelta(seconds=lease_s)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise JobError(f"a {what} must be a non-empty string, not {value!r}")
    return value


def _kinds(kinds: Collection[str]) -> list[str]:
    if isinstance(kinds, str):
        raise JobError(f"kinds must be a list of job kinds, e.g. [{kinds!r}], not the string {kinds!r}")
    return [_name(kind, "job kind") for kind in kinds]


def _states(states: Collection[str], known: tuple[str, ...], what: str) -> list[str]:
    if isinstance(states, str):
        raise JobError(
            f"states must be a list of {what} states, e.g. [{states!r}], not the string {states!r}"
        )
    unknown = sorted(set(states) - set(known))
    if unknown:
        raise JobError(f"unknown {what} state(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return list(states)


def _json_object(value: object, what: str) -> JsonObject:
    """`value` as it will come back from the database (tuples become lists); JobError if it is not JSON."""
    if not isinstance(value, Mapping):
        raise JobError(f"{what} must be a JSON object (a dict), not {type(value).__name__}")
    try:
        text = json.dumps(dict(value), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise JobError(f"{what} is not JSON: {exc}") from exc
    loaded: JsonObject = json.loads(text)
    return loaded


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _job_record(job: Job) -> JobRecord:
    return record_of(JobRecord, job)


def _unit_record(unit: WorkUnit) -> UnitRecord:
    return record_of(UnitRecord, unit)
