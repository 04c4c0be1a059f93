"""The compile pool's workers: Ctrl-C is left to the parent, and closing the pool stops every worker at once,
even one in the middle of a long compile (no orphan processes after an interrupted sweep)."""

import signal
import time
from pathlib import Path

from tuner.search.compile_pool import WorkerPool


def _nothing() -> None:
    pass


def _running(pid: int) -> bool:
    """Whether the process still runs (a zombie waiting to be reaped does not). Read from /proc rather than
    Process.is_alive(), which can misreport a child that the executor's own thread reaped first."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_workers_ignore_ctrl_c_so_only_the_parent_handles_it():
    pool = WorkerPool(1, _nothing)
    try:
        assert pool.submit(signal.getsignal, signal.SIGINT).result(timeout=60) == signal.SIG_IGN
    finally:
        pool.close()


def test_close_stops_busy_workers_and_cancels_queued_work():
    pool = WorkerPool(2, _nothing)
    started = [pool.submit(time.sleep, 0) for _ in range(2)]
    for f in started:
        f.result(timeout=60)  # both workers are up
    procs = list(pool._executor._processes.values())
    assert len(procs) == 2
    busy = [pool.submit(time.sleep, 120) for _ in range(2)]
    queued = [pool.submit(time.sleep, 120) for _ in range(4)]
    time.sleep(0.5)
    t0 = time.monotonic()
    pool.close()
    assert time.monotonic() - t0 < 10  # did not wait for the two-minute tasks
    deadline = time.monotonic() + 10
    while any(_running(p.pid) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_running(p.pid) for p in procs)
    # nothing is left waiting forever: queued work is cancelled, abandoned work fails
    deadline = time.monotonic() + 10
    while not all(f.done() for f in busy + queued) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(f.cancelled() or f.exception() is not None for f in busy + queued)
