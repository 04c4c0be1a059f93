"""The work-unit queue in one process: claim order, leases, heartbeats, expiry, completion, cancellation.

Every test runs on SQLite and on PostgreSQL (the `db` fixture). Leases are made short (a fraction of a second)
where a test needs one to run out.
"""

from __future__ import annotations

import time

import pytest

from tuner.errors import JobError, LeaseLostError
from tuner.jobs import units
from tuner.store.db import Database

SHORT_LEASE_S = 1.0  # long enough that a loaded CI machine does not expire it mid-test


def _sweep(db: Database, *keys: str, kind: str = "kernel_sweep", max_attempts: int = 3) -> units.JobRecord:
    spec: units.JsonObject = {"model": "GLM-4.7-FP8", "tp": 8, "kind": kind}
    planned = [(key, {"batch_size": i}) for i, key in enumerate(keys)]
    return units.create_job(db, kind, spec, planned, max_attempts=max_attempts)


def _expire() -> None:
    time.sleep(SHORT_LEASE_S + 0.2)


def test_create_job_is_idempotent_and_adds_only_missing_units(db: Database) -> None:
    job = _sweep(db, "M=1", "M=2")
    assert (job.state, job.kind, job.spec["tp"]) == ("queued", "kernel_sweep", 8)
    assert _sweep(db, "M=1", "M=2") == job
    grown = _sweep(db, "M=1", "M=2", "M=4")
    assert grown.id == job.id
    assert [u.key for u in units.list_units(db, job.id)] == ["M=1", "M=2", "M=4"]
    assert units.find_job(db, job.key) == units.get_job(db, job.id)
    with pytest.raises(JobError, match="another kind or spec"):
        units.create_job(db, "flag_search", {"x": 1}, [], key=job.key)
    with pytest.raises(JobError, match="'M=1'.*another payload"):
        units.create_job(db, "kernel_sweep", job.spec, [("M=1", {"batch_size": 99})], key=job.key)


def test_misuse_is_refused_with_one_line(db: Database) -> None:
    with pytest.raises(JobError, match="job kind must be a non-empty string"):
        units.create_job(db, "", {}, [])
    with pytest.raises(JobError, match="'M=1' appears twice"):
        units.create_job(db, "k", {}, [("M=1", {}), ("M=1", {})])
    with pytest.raises(JobError, match="payload of unit 'M=1' is not JSON"):
        units.create_job(db, "k", {}, [("M=1", {"x": float("nan")})])
    with pytest.raises(JobError, match="job spec must be a JSON object"):
        units.create_job(db, "k", [1, 2], [])  # type: ignore[arg-type]
    with pytest.raises(JobError, match="max_attempts must be"):
        units.create_job(db, "k", {}, [], max_attempts=0)
    with pytest.raises(JobError, match="lease_s must be a positive"):
        units.claim_unit(db, "w1", lease_s=0)
    with pytest.raises(JobError, match="kinds must be a list of job kinds"):
        units.claim_unit(db, "w1", kinds="kernel_sweep")
    with pytest.raises(JobError, match="unknown unit state"):
        units.list_units(db, 1, states=["running"])
    with pytest.raises(JobError, match="no job with id 999"):
        units.cancel_job(db, 999)
    with pytest.raises(JobError, match="no work unit with id 999"):
        units.heartbeat(db, 999, "w1")


def test_claim_takes_the_oldest_claimable_unit_of_the_kinds_asked(db: Database) -> None:
    sweep = _sweep(db, "M=1", "M=2")
    search = _sweep(db, "trial-0", kind="flag_search")
    claim = units.claim_unit(db, "w1", kinds=["flag_search"])
    assert claim is not None
    assert (claim.unit.key, claim.job.id, claim.job.kind, claim.job.state) == (
        "trial-0",
        search.id,
        "flag_search",
        "running",
    )
    assert (claim.unit.state, claim.unit.worker_id, claim.unit.attempts) == ("claimed", "w1", 1)
    assert claim.unit.payload == {"batch_size": 0}
    assert units.claim_unit(db, "w1", kinds=["flag_search"]) is None
    first, second = units.claim_unit(db, "w2"), units.claim_unit(db, "w3")
    assert first is not None and second is not None
    assert [first.unit.key, second.unit.key] == ["M=1", "M=2"]
    assert first.job.id == sweep.id
    assert units.claim_unit(db, "w4") is None


def test_claim_can_keep_to_the_jobs_a_worker_was_started_for(db: Database) -> None:
    first = _sweep(db, "M=1")
    second = _sweep(db, "M=64", kind="kernel_sweep:other")
    claim = units.claim_unit(db, "w1", job_ids=[second.id])
    assert claim is not None and claim.job.id == second.id
    assert units.claim_unit(db, "w1", job_ids=[second.id]) is None
    other = units.claim_unit(db, "w2", job_ids=[first.id, second.id])
    assert other is not None and other.job.id == first.id


def test_heartbeat_extends_the_lease_of_its_owner_only(db: Database) -> None:
    _sweep(db, "M=1")
    claim = units.claim_unit(db, "w1", lease_s=5)
    assert claim is not None and claim.unit.lease_expires_at is not None
    renewed = units.heartbeat(db, claim.unit.id, "w1", lease_s=600)
    assert renewed.lease_expires_at is not None and renewed.heartbeat_at is not None
    assert renewed.lease_expires_at - claim.unit.lease_expires_at > units.dt.timedelta(seconds=500)
    with pytest.raises(LeaseLostError, match="worker w2 no longer holds unit .*'M=1'"):
        units.heartbeat(db, claim.unit.id, "w2")
    with pytest.raises(LeaseLostError):
        units.complete(db, claim.unit.id, "w2", {"latency_us": 1.0})
    with pytest.raises(LeaseLostError):
        units.fail(db, claim.unit.id, "w2", "boom")
    assert units.list_units(db, claim.job.id)[0].state == "claimed"


def test_a_unit_whose_lease_expired_is_claimed_again_and_its_old_owner_told(db: Database) -> None:
    job = _sweep(db, "M=1")
    dead = units.claim_unit(db, "w1", lease_s=SHORT_LEASE_S)
    assert dead is not None
    assert units.claim_unit(db, "w2") is None  # the lease still runs
    _expire()
    again = units.claim_unit(db, "w2")
    assert again is not None
    assert (again.unit.id, again.unit.worker_id, again.unit.attempts) == (dead.unit.id, "w2", 2)
    with pytest.raises(LeaseLostError, match="lease expired and worker w2 claimed it again"):
        units.heartbeat(db, dead.unit.id, "w1")
    with pytest.raises(LeaseLostError, match="w2 claimed it again"):
        units.complete(db, dead.unit.id, "w1", {"by": "w1"})
    done = units.complete(db, again.unit.id, "w2", {"by": "w2"})
    assert (done.state, done.result, done.lease_expires_at) == ("done", {"by": "w2"}, None)
    assert units.get_job(db, job.id).state == "finished"


def test_an_expired_lease_not_yet_claimed_again_is_still_the_workers(db: Database) -> None:
    _sweep(db, "M=1")
    claim = units.claim_unit(db, "w1", lease_s=SHORT_LEASE_S)
    assert claim is not None
    _expire()  # a long pause (GC, a slow disk), but nobody took the unit meanwhile
    assert units.heartbeat(db, claim.unit.id, "w1").state == "claimed"
    assert units.claim_unit(db, "w2") is None


def test_a_unit_abandoned_max_attempts_times_is_failed_and_the_next_one_claimed(db: Database) -> None:
    job = _sweep(db, "M=1", "M=2", max_attempts=2)
    for worker in ("w1", "w2"):
        claim = units.claim_unit(db, worker, lease_s=SHORT_LEASE_S)
        assert claim is not None and claim.unit.key == "M=1"
        _expire()
    nxt = units.claim_unit(db, "w3")
    assert nxt is not None and nxt.unit.key == "M=2"
    failed = units.list_units(db, job.id, states=["failed"])
    assert [u.key for u in failed] == ["M=1"]
    assert failed[0].error is not None
    assert "lease expired 2 times" in failed[0].error and "last worker w2" in failed[0].error
    units.complete(db, nxt.unit.id, "w3")
    ended = units.get_job(db, job.id)
    assert ended.state == "failed"
    assert ended.error is not None and ended.error.startswith("1 of 2 units failed; M=1: lease expired")


def test_job_state_follows_its_units(db: Database) -> None:
    job = _sweep(db, "M=1", "M=2")
    one, two = units.claim_unit(db, "w1"), units.claim_unit(db, "w2")
    assert one is not None and two is not None
    assert (
        units.complete(db, one.unit.id, "w1", {"latency_us": 41.2, "config": {"BLOCK_M": 64}}).state == "done"
    )
    assert units.get_job(db, job.id).state == "running"
    failed = units.fail(db, two.unit.id, "w2", "compile error: out of shared memory")
    assert (failed.state, failed.error) == ("failed", "compile error: out of shared memory")
    ended = units.get_job(db, job.id)
    assert (ended.state, ended.error) == (
        "failed",
        "1 of 2 units failed; M=2: compile error: out of shared memory",
    )
    assert units.list_units(db, job.id)[0].result == {"latency_us": 41.2, "config": {"BLOCK_M": 64}}
    with pytest.raises(LeaseLostError, match="done already"):
        units.complete(db, one.unit.id, "w1")
    assert units.create_job(db, "export", {"out": "/tmp/x"}, []).state == "finished"  # nothing to do


def test_release_gives_the_unit_back_without_counting_the_attempt(db: Database) -> None:
    job = _sweep(db, "M=1")
    claim = units.claim_unit(db, "w1")
    assert claim is not None
    back = units.release(db, claim.unit.id, "w1")
    assert (back.state, back.attempts, back.worker_id) == ("queued", 0, None)
    assert units.get_job(db, job.id).state == "queued"
    with pytest.raises(LeaseLostError, match="given back to the queue"):
        units.heartbeat(db, claim.unit.id, "w1")
    again = units.claim_unit(db, "w2")
    assert again is not None and again.unit.attempts == 1


def test_cancel_stops_a_job_and_tells_its_workers(db: Database) -> None:
    job = _sweep(db, "M=1", "M=2")
    other = _sweep(db, "M=1", kind="export")
    claim = units.claim_unit(db, "w1")
    assert claim is not None and claim.job.id == job.id
    cancelled = units.cancel_job(db, job.id, reason="user asked")
    assert (cancelled.state, cancelled.error) == ("cancelled", "cancelled: user asked")
    with pytest.raises(LeaseLostError, match="its job was cancelled"):
        units.heartbeat(db, claim.unit.id, "w1")
    assert {u.state for u in units.list_units(db, job.id)} == {"cancelled"}
    nxt = units.claim_unit(db, "w1")
    assert nxt is not None and nxt.job.id == other.id  # the other job is untouched
    assert units.cancel_job(db, job.id) == cancelled  # again: nothing changes
    with pytest.raises(JobError, match="was cancelled"):
        _sweep(db, "M=1", "M=2", "M=8")
    units.complete(db, nxt.unit.id, "w1")
    assert units.cancel_job(db, other.id).state == "finished"  # an ended job stays as it ended


def test_progress_counts_units_and_live_workers_hold_leases(db: Database) -> None:
    job = _sweep(db, "M=1", "M=2", "M=3", "M=4")
    a = units.claim_unit(db, "w1", lease_s=60)
    b = units.claim_unit(db, "w2", lease_s=SHORT_LEASE_S)
    c = units.claim_unit(db, "w1", lease_s=60)
    assert a is not None and b is not None and c is not None
    units.complete(db, c.unit.id, "w1")
    progress = units.job_progress(db, job.id)
    assert (progress.queued, progress.claimed, progress.done, progress.failed, progress.total) == (
        1,
        2,
        1,
        0,
        4,
    )
    assert units.list_progress(db, states=["running"]) == [progress]
    assert units.list_progress(db, states=["finished"]) == []
    assert {(w.worker_id, w.unit_ids) for w in units.live_workers(db)} == {
        ("w1", (a.unit.id,)),
        ("w2", (b.unit.id,)),
    }
    _expire()
    (alive,) = units.live_workers(db)
    assert alive.worker_id == "w1" and alive.lease_expires_at > alive.last_heartbeat_at
    assert [j.id for j in units.list_jobs(db, kinds=["kernel_sweep"], states=["running"])] == [job.id]


def test_units_of_an_in_order_job_are_claimed_one_at_a_time_and_a_failure_stops_the_rest(db):  # type: ignore[no-untyped-def]
    job = units.create_job(db, "flag_search:sim", {"s": 1}, [("baseline", {}), ("trial 1", {}), ("trial 2", {})],
                           in_order=True, max_attempts=2)
    other = units.create_job(db, "flag_search:sim", {"s": 2}, [("baseline", {})], in_order=True)
    first = units.claim_unit(db, "w1")
    assert first is not None and first.unit.key == "baseline" and first.job.id == job.id
    second = units.claim_unit(db, "w2")  # the next unit of that job waits; another job's first unit does not
    assert second is not None and second.job.id == other.id
    assert units.claim_unit(db, "w3") is None
    units.complete(db, first.unit.id, "w1", {})
    nxt = units.claim_unit(db, "w3")
    assert nxt is not None and nxt.unit.key == "trial 1"
    units.fail(db, nxt.unit.id, "w3", "NothingCanLaunchError: the baseline could not launch")
    states = {u.key: u.state for u in units.list_units(db, job.id)}
    assert states == {"baseline": "done", "trial 1": "failed", "trial 2": "cancelled"}
    assert units.get_job(db, job.id).state == "failed"
    assert units.requeue_failed(db, job.id) == 2  # fixed and run again: both come back, still in order
    again = units.claim_unit(db, "w4")
    assert again is not None and again.unit.key == "trial 1" and units.claim_unit(db, "w5") is None
