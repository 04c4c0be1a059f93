"""`tuner bench` runs in the store: one row per engine launch + load + metrics scrape, ok or failed.

Plain functions taking a `Database`; frozen dataclasses come out. Knows nothing of engines or workloads beyond
storing what it is handed as JSON.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tuner.store.base import JsonObject
from tuner.store.db import Database
from tuner.store.models import BenchRun

BENCH_STATUSES: tuple[str, ...] = ("ok", "failed")
_REQUIRED_FIELDS: tuple[str, ...] = ("engine", "model", "flags", "env", "workload", "status")
_OPTIONAL_FIELDS: tuple[str, ...] = (
    "engine_version",
    "gpu",
    "failure_kind",
    "error",
    "client_summary",
    "engine_metrics",
    "server_info",
    "log_path",
    "stage_seconds",
    "created_at",
)


@dataclass(frozen=True)
class BenchRunRecord:
    id: int
    created_at: dt.datetime
    engine: str
    engine_version: str | None
    model: str
    gpu: str | None
    flags: JsonObject  # the engine's flags as launched, name -> value
    env: dict[str, str]
    workload: JsonObject  # the workload's description (kind, lengths, arrivals)
    status: str  # "ok" | "failed"
    failure_kind: str | None
    error: str | None
    client_summary: JsonObject | None  # client-side latency/throughput figures (engine time)
    engine_metrics: JsonObject | None  # what the engine's /metrics said, by metric
    server_info: JsonObject | None
    log_path: str | None
    stage_seconds: dict[str, float] | None  # wall seconds per stage (launch, ready, warmup, load, scrape, teardown)


def record_bench_run(db: Database, **fields: Any) -> int:
    """Store one bench run and return its id.

    Needs engine, model, flags, env, workload (JSON-able) and status ("ok" | "failed"); the other
    BenchRunRecord fields are optional (created_at defaults to now).
    """
    unknown = set(fields) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS)
    if unknown:
        raise TypeError(f"record_bench_run() got unknown field(s): {', '.join(sorted(unknown))}")
    missing = [name for name in _REQUIRED_FIELDS if fields.get(name) is None]
    if missing:
        raise TypeError(f"record_bench_run() needs field(s): {', '.join(missing)}")
    if fields["status"] not in BENCH_STATUSES:
        raise ValueError(
            f"unknown bench status {fields['status']!r}; expected one of {', '.join(BENCH_STATUSES)}"
        )
    if fields.get("log_path") is not None:
        fields = {**fields, "log_path": str(fields["log_path"])}

    def work(session: Session) -> int:
        row = BenchRun(**fields)
        session.add(row)
        session.flush()
        return row.id

    return db.transaction(work)


def list_bench_runs(db: Database, limit: int = 20) -> list[BenchRunRecord]:
    """The latest `limit` bench runs, newest first."""

    def work(session: Session) -> list[BenchRunRecord]:
        rows = session.scalars(
            sa.select(BenchRun).order_by(BenchRun.created_at.desc(), BenchRun.id.desc()).limit(limit)
        )
        return [_record(row) for row in rows]

    return db.transaction(work, read_only=True)


def get_bench_run(db: Database, run_id: int) -> BenchRunRecord | None:
    def work(session: Session) -> BenchRunRecord | None:
        row = session.get(BenchRun, run_id)
        return None if row is None else _record(row)

    return db.transaction(work, read_only=True)


def _record(row: BenchRun) -> BenchRunRecord:
    return BenchRunRecord(
        id=row.id,
        created_at=row.created_at,
        engine=row.engine,
        engine_version=row.engine_version,
        model=row.model,
        gpu=row.gpu,
        flags=row.flags,
        env=row.env,
        workload=row.workload,
        status=row.status,
        failure_kind=row.failure_kind,
        error=row.error,
        client_summary=row.client_summary,
        engine_metrics=row.engine_metrics,
        server_info=row.server_info,
        log_path=row.log_path,
        stage_seconds=row.stage_seconds,
    )
