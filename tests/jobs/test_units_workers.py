"""Worker processes sharing one queue: each unit is done exactly once; a dead worker's unit is taken over.

Real processes (spawned, each opening its own Database), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from tuner.errors import LeaseLostError
from tuner.jobs import units
from tuner.store.db import open_database

WORKERS = 4
UNITS = 48
JOIN_TIMEOUT_S = 120


def _work_until_empty(url: str, worker_id: str, start, out: str) -> None:  # type: ignore[no-untyped-def]
    db = open_database(url)
    start.wait(timeout=60)
    done: list[int] = []
    while (claim := units.claim_unit(db, worker_id, lease_s=60)) is not None:
        time.sleep(0.005)  # the "work": long enough for the others to claim in between
        units.heartbeat(db, claim.unit.id, worker_id, lease_s=60)
        units.complete(db, claim.unit.id, worker_id, {"worker": worker_id})
        done.append(claim.unit.id)
    Path(out).write_text(json.dumps(done))
    db.dispose()


def test_four_workers_do_every_unit_exactly_once(db_url: str, tmp_path: Path) -> None:
    db = open_database(db_url)
    job = units.create_job(
        db, "kernel_sweep", {"model": "m"}, [(f"M={m}", {"batch_size": m}) for m in range(UNITS)]
    )
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(WORKERS)
    outs = [tmp_path / f"w{w}.json" for w in range(WORKERS)]
    procs = [
        spawn.Process(target=_work_until_empty, args=(db_url, f"w{w}", start, str(outs[w])))
        for w in range(WORKERS)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
        assert [p.exitcode for p in procs] == [0] * WORKERS
        by_worker = {f"w{w}": json.loads(out.read_text()) for w, out in enumerate(outs)}
        done = sorted(unit_id for ids in by_worker.values() for unit_id in ids)
        all_units = units.list_units(db, job.id)
        assert done == sorted(u.id for u in all_units)  # each unit done once: none twice, none missed
        assert all(u.state == "done" and u.attempts == 1 for u in all_units)
        assert {u.id: u.result for u in all_units} == {
            unit_id: {"worker": worker} for worker, ids in by_worker.items() for unit_id in ids
        }
        assert sum(1 for ids in by_worker.values() if ids) >= 2  # they really ran side by side
        assert units.get_job(db, job.id).state == "finished"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        db.dispose()


def _claim_and_hang(url: str, worker: str, lease_s: float, claimed) -> None:  # type: ignore[no-untyped-def]
    db = open_database(url)
    claim = units.claim_unit(db, worker, lease_s=lease_s)
    claimed.put(None if claim is None else claim.unit.id)
    time.sleep(600)  # "working" until killed, never heartbeating


def test_a_killed_workers_unit_is_claimed_by_another_after_its_lease(db_url: str) -> None:
    lease_s = 1.0
    db = open_database(db_url)
    job = units.create_job(db, "flag_search", {"study": "s"}, [("trial-0", {"flags": {"tp": 8}})])
    spawn = multiprocessing.get_context("spawn")
    claimed = spawn.Queue()
    doomed = spawn.Process(target=_claim_and_hang, args=(db_url, "doomed", lease_s, claimed))
    try:
        doomed.start()
        unit_id = claimed.get(timeout=60)
        assert unit_id is not None
        claimed_at = time.monotonic()
        os.kill(doomed.pid, signal.SIGKILL)  # type: ignore[arg-type]
        doomed.join(timeout=30)
        assert units.claim_unit(db, "rescuer") is None  # its lease still runs
        assert [w.worker_id for w in units.live_workers(db)] == ["doomed"]
        time.sleep(max(0.0, lease_s + 0.3 - (time.monotonic() - claimed_at)))
        assert units.live_workers(db) == []
        rescue = units.claim_unit(db, "rescuer")
        assert rescue is not None
        assert (rescue.unit.id, rescue.unit.attempts, rescue.unit.payload) == (
            unit_id,
            2,
            {"flags": {"tp": 8}},
        )
        units.complete(db, unit_id, "rescuer", {"goodput_tok_s": 1234.5})
        with pytest.raises(LeaseLostError, match=r"done already \(by worker rescuer\)"):
            units.complete(db, unit_id, "doomed", {"goodput_tok_s": 0.0})  # a late word from the dead
        assert units.list_units(db, job.id)[0].result == {"goodput_tok_s": 1234.5}
        assert units.get_job(db, job.id).state == "finished"
    finally:
        if doomed.is_alive():
            doomed.kill()
            doomed.join()
        db.dispose()
