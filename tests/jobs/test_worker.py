"""The worker loop (`tuner.jobs.worker.work`) with CPU handlers standing in for GPU sweeps, on SQLite and on
PostgreSQL: units run once each, failures are recorded and the loop goes on, Ctrl-C gives the unit back, a lost
lease keeps a result out, and four worker processes of which two are SIGKILLed still measure every unit, each
stored once."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest

from tuner.jobs import units
from tuner.jobs.status import status_lines
from tuner.jobs.worker import work
from tuner.store.db import open_database
from tuner.store.kernels import Measurement, MeasurementContext, load_measurements, record_measurement

CTX = MeasurementContext("fused_moe", "fake", "CPU", "0", "sim")
SHAPE_KEY = "E=8,N=64,K=128"


class Recorder:
    """A handler that 'measures' a unit by storing one measurement row for its batch size."""

    def __init__(self, url: str, fail_on: int | None = None, interrupt_on: int | None = None, delay_s: float = 0.0):
        self.db = open_database(url)
        self.fail_on, self.interrupt_on, self.delay_s = fail_on, interrupt_on, delay_s
        self.ran: list[int] = []

    def run(self, unit: units.UnitRecord) -> dict:
        m = int(unit.payload["batch_size"])  # type: ignore[arg-type]
        self.ran.append(m)
        time.sleep(self.delay_s)
        if m == self.fail_on:
            raise RuntimeError("illegal memory access")
        if m == self.interrupt_on:
            raise KeyboardInterrupt
        record_measurement(self.db, CTX, SHAPE_KEY, Measurement(m, f"cfg-{m}", "ok", float(m), 0.1, 1e-3, None, 0.01, 6))
        return {"latency_us": float(m)}

    def close(self) -> None:
        self.db.dispose()


def _job(db, sizes):  # type: ignore[no-untyped-def]
    return units.create_job(db, "kernel_sweep:CPU", {"model": "m", "tp": 8}, [(f"M={m}", {"batch_size": m}) for m in sizes])


def test_one_worker_runs_every_unit_once_and_records_a_failure_without_stopping(db, db_url):  # type: ignore[no-untyped-def]
    job = _job(db, [1, 2, 4, 8])
    handler = Recorder(db_url, fail_on=4)
    summary = work(db_url, lambda _job: handler, kinds=["kernel_sweep:CPU"], heartbeat_s=0.05)
    assert sorted(handler.ran) == [1, 2, 4, 8]
    assert summary.failed == [f"job#{job.id}/M=4"] and len(summary.done) == 3
    by_key = {u.key: u for u in units.list_units(db, job.id)}
    assert by_key["M=4"].state == "failed" and "illegal memory access" in by_key["M=4"].error
    assert by_key["M=8"].result == {"latency_us": 8.0}
    assert units.get_job(db, job.id).state == "failed"
    # fixed and run again: only the failed unit is queued again, and nothing else re-runs
    assert units.requeue_failed(db, job.id) == 1
    again = Recorder(db_url)
    work(db_url, lambda _job: again, kinds=["kernel_sweep:CPU"])
    assert again.ran == [4] and units.get_job(db, job.id).state == "finished"


def test_ctrl_c_gives_the_unit_back_at_once(db, db_url):  # type: ignore[no-untyped-def]
    job = _job(db, [1, 2])
    with pytest.raises(KeyboardInterrupt):
        work(db_url, lambda _job: Recorder(db_url, interrupt_on=2), kinds=["kernel_sweep:CPU"])
    states = {u.key: (u.state, u.attempts) for u in units.list_units(db, job.id)}
    assert states == {"M=1": ("done", 1), "M=2": ("queued", 0)}  # claimable now, not after a lease


def test_a_worker_keeps_to_its_devices_kind_and_its_jobs(db, db_url):  # type: ignore[no-untyped-def]
    mine = _job(db, [1])
    other_gpu = units.create_job(db, "kernel_sweep:NVIDIA H100 80GB HBM3", {"model": "m"}, [("M=1", {"batch_size": 1})])
    handler = Recorder(db_url)
    work(db_url, lambda _job: handler, kinds=["kernel_sweep:CPU"], job_ids=[mine.id])
    assert handler.ran == [1]
    assert units.job_progress(db, other_gpu.id).queued == 1


def test_a_lost_lease_keeps_the_result_out(db, db_url):  # type: ignore[no-untyped-def]
    job = _job(db, [1])

    class Slow(Recorder):
        def run(self, unit):  # type: ignore[no-untyped-def]
            units.cancel_job(self.db, job.id, "user cancelled")  # the job goes away while the unit runs
            time.sleep(0.3)
            return super().run(unit)

    summary = work(db_url, lambda _job: Slow(db_url), kinds=["kernel_sweep:CPU"], heartbeat_s=0.05)
    assert summary.done == []
    (unit,) = units.list_units(db, job.id)
    assert unit.state == "cancelled" and unit.result is None


def _worker_process(url: str, delay_s: float) -> None:
    work(url, lambda _job: Recorder(url, delay_s=delay_s), kinds=["kernel_sweep:CPU"], lease_s=1.5, heartbeat_s=0.2,
         poll_s=0.1)


def test_four_workers_two_killed_every_unit_measured_and_stored_once(db, db_url):  # type: ignore[no-untyped-def]
    sizes = list(range(1, 41))
    job = _job(db, sizes)
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker_process, args=(db_url, 0.05)) for _ in range(4)]
    try:
        for p in procs:
            p.start()
        rng = random.Random(0)
        for victim in procs[:2]:  # killed mid-unit at random moments, with no chance to give anything back
            deadline = time.monotonic() + 60
            while units.job_progress(db, job.id).done < rng.randint(3, 12) and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
        # the survivors finish, taking over the killed workers' units once their leases end
        for p in procs[2:]:
            p.join(timeout=120)
        assert [p.exitcode for p in procs[2:]] == [0, 0]
        all_units = units.list_units(db, job.id)
        assert all(u.state == "done" for u in all_units)
        assert units.get_job(db, job.id).state == "finished"
        rows = load_measurements(open_database(db_url), CTX, SHAPE_KEY)
        assert sorted(m.batch_size for m in rows) == sizes  # every unit measured, each stored once, none lost
        # only a unit in flight when its worker died ran twice
        assert sum(u.attempts - 1 for u in all_units) <= 2
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


def test_status_shows_progress_and_live_workers(db):  # type: ignore[no-untyped-def]
    job = _job(db, [1, 2, 3])
    claim = units.claim_unit(db, "host-a/gpu0", lease_s=60)
    assert claim is not None
    units.complete(db, claim.unit.id, "host-a/gpu0", {})
    units.claim_unit(db, "host-b/gpu1", lease_s=60)
    lines = status_lines(db)
    assert lines[0].startswith(f"job #{job.id} kernel_sweep:CPU m TP8 [running]: 1/3 done, 1 running, 1 queued")
    assert any(line.startswith("worker host-b/gpu1") and "lease ends in" in line for line in lines)
    assert not any("host-a" in line for line in lines)  # holds nothing now


def test_status_without_jobs_says_so(db):  # type: ignore[no-untyped-def]
    assert status_lines(db) == ["no queued or running jobs (--all shows ended ones)", "no live workers"]


def test_an_adaptive_sweep_of_several_batch_sizes_plans_a_second_pass_after_every_first_one():
    from tuner.jobs.kernel_sweep import sweep_units
    from tuner.kernels.base import MoeShape, Quant
    from tuner.search.kernel_sweep import SweepSpec

    shape = MoeShape(161, 192, 5120, 9, Quant.FP8_PER_CHANNEL)
    spec = SweepSpec("GLM-4.7-FP8", 8, 1, True, shape, batch_sizes=(1, 64, 4096))
    planned = sweep_units([spec])
    assert [(k, s) for k, _, s in planned] == [("M=4096", 0), ("M=64", 0), ("M=1", 0), ("second pass M=4096", 1),
                                               ("second pass M=64", 1), ("second pass M=1", 1)]  # largest M first
    assert planned[3][1] == {"sweep": 0, "batch_size": 4096, "phase": "refine"}
    # one batch size, or the exhaustive strategy (it measured everything already): no second pass
    assert len(sweep_units([SweepSpec("m", 8, 1, True, shape, batch_sizes=(64,))])) == 1
    assert len(sweep_units([SweepSpec("m", 8, 1, True, shape, batch_sizes=(1, 64), strategy="exhaustive")])) == 2
    # several sweeps in one job: every first pass comes before any second pass
    two = sweep_units([spec, SweepSpec("m", 8, 1, True, shape, batch_sizes=(1, 2), kernel="fused_moe")])
    assert [s for _, _, s in two] == [0] * 5 + [1] * 5


def _gpu_worker_stand_in(url: str, gpu: int, job_ids: list[int], compile_workers: int | None,
                         compile_pool: object) -> None:
    """What GpuWorkers runs on a 'GPU' here: the worker loop with CPU handlers, one worker id per GPU."""
    if gpu == 99:
        raise RuntimeError("GPU fault")
    work(url, lambda _job: Recorder(url, delay_s=0.02), kinds=["kernel_sweep:CPU"], job_ids=job_ids,
         worker_id=f"test/gpu{gpu}", lease_s=5, heartbeat_s=0.5, poll_s=0.1)


def test_gpu_workers_started_before_their_job_share_it_once_given(db, db_url):  # type: ignore[no-untyped-def]
    from tuner.jobs.worker import GpuWorkers

    with GpuWorkers(db_url, [0, 1], run=_gpu_worker_stand_in) as workers:
        time.sleep(0.5)  # the job is planned while the workers start
        job = _job(db, list(range(1, 21)))
        workers.start([job.id])
        assert workers.join() == []
    all_units = units.list_units(db, job.id)
    assert all(u.state == "done" and u.attempts == 1 for u in all_units)
    assert {u.worker_id for u in all_units} <= {"test/gpu0", "test/gpu1"}
    rows = load_measurements(open_database(db_url), CTX, SHAPE_KEY)
    assert sorted(m.batch_size for m in rows) == list(range(1, 21))


def test_gpu_workers_of_a_refused_request_end_without_touching_the_queue(db, db_url):  # type: ignore[no-untyped-def]
    from tuner.jobs.worker import GpuWorkers

    job = _job(db, [1, 2, 3])  # queued work the workers must not take: they were never given a job
    t0 = time.monotonic()
    workers = GpuWorkers(db_url, [0, 1], run=_gpu_worker_stand_in)
    with pytest.raises(ValueError), workers:
        raise ValueError("bad request")  # plan() refusing the request
    assert time.monotonic() - t0 < 30
    assert not any(p.is_alive() for p in workers._procs)
    assert [u.state for u in units.list_units(db, job.id)] == ["queued"] * 3


def test_gpu_workers_name_the_gpu_whose_worker_failed(db, db_url):  # type: ignore[no-untyped-def]
    from tuner.jobs.worker import GpuWorkers

    job = _job(db, [1, 2, 3, 4])
    with GpuWorkers(db_url, [0, 99], run=_gpu_worker_stand_in) as workers:
        workers.start([job.id])
        assert workers.join() == [99]
    assert all(u.state == "done" for u in units.list_units(db, job.id))  # the other worker did the work


def test_a_worker_keeps_one_jobs_state_open_and_none_while_idle(db, db_url, monkeypatch):  # type: ignore[no-untyped-def]
    """A long-running GPU worker must not keep every finished job's sweep sessions (weights on the GPU, a compile
    pool of 15 processes each) open: the previous job's handler is closed before the next job's opens, and a worker
    that stays waiting for work holds none."""
    import tuner.jobs.worker as worker_module

    events: list[str] = []

    class Tracked(Recorder):
        def __init__(self, url, job_id):  # type: ignore[no-untyped-def]
            super().__init__(url)
            self.job_id = job_id
            events.append(f"open {job_id}")

        def close(self) -> None:
            events.append(f"close {self.job_id}")
            super().close()

    class Clock:  # the module's `time`, except that sleeping while idle ends the staying worker like Ctrl-C
        naps = 0

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(time, name)

        def sleep(self, seconds):  # type: ignore[no-untyped-def]
            self.naps += 1
            if (events and events[-1].startswith("close")) or self.naps > 100:  # (100: a worker that never closes)
                raise KeyboardInterrupt
            time.sleep(seconds)

    first = _job(db, [1, 2])
    second = units.create_job(db, "kernel_sweep:CPU", {"model": "other", "tp": 8},
                              [(f"M={m}", {"batch_size": m}) for m in (4, 8)])
    monkeypatch.setattr(worker_module, "time", Clock())
    with pytest.raises(KeyboardInterrupt):
        work(db_url, lambda job: Tracked(db_url, job.id), kinds=["kernel_sweep:CPU"], stay=True, poll_s=0.05,
             heartbeat_s=0.05)
    assert events == [f"open {first.id}", f"close {first.id}", f"open {second.id}", f"close {second.id}"]
    assert all(u.state == "done" for j in (first, second) for u in units.list_units(db, j.id))
