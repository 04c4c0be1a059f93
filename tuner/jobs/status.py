"""What `tuner status` (and later the service) shows: jobs with unit counts, and workers with their leases."""

from __future__ import annotations

import datetime as dt

from tuner.jobs import units
from tuner.store.db import Database

ACTIVE_STATES = ("queued", "running")


def status_lines(db: Database, include_ended: bool = False, now: dt.datetime | None = None) -> list[str]:
    """One line per job (id, kind, state, units done/claimed/queued/failed of all), then one per live worker
    (its units and how long ago it last beat)."""
    now = now or dt.datetime.now(dt.UTC)
    jobs = units.list_progress(db, states=None if include_ended else ACTIVE_STATES)
    lines = []
    if not jobs:
        lines.append("no jobs" if include_ended else "no queued or running jobs (--all shows ended ones)")
    for p in jobs:
        total = p.queued + p.claimed + p.done + p.failed + p.cancelled
        spec = p.job.spec
        what = f"{spec.get('model', '')} TP{spec.get('tp', '?')}" if "model" in spec else ""
        lines.append(f"job #{p.job.id} {p.job.kind} {what} [{p.job.state}]: {p.done}/{total} done, "
                     f"{p.claimed} running, {p.queued} queued, {p.failed} failed"
                     + (f" - {p.job.error}" if p.job.error else ""))
    workers = units.live_workers(db)
    for w in workers:
        ago = (now - w.last_heartbeat_at).total_seconds()
        left = (w.lease_expires_at - now).total_seconds()
        lines.append(f"worker {w.worker_id}: units {', '.join(map(str, w.unit_ids))}, last heartbeat {ago:.0f} s ago, "
                     f"lease ends in {left:.0f} s")
    if not workers:
        lines.append("no live workers")
    return lines
