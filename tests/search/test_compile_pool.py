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


def test_start_all_starts_every_worker_before_any_work_is_submitted():
    # a spawned executor starts one process per submit that finds none idle: without start_all the first burst
    # of compiles would wait for the interpreters to start after it was submitted
    pool = WorkerPool(3, _nothing)
    try:
        pool.start_all()
        assert len(pool._executor._processes) == 3
        deadline = time.monotonic() + 60
        while not all(_running(p.pid) for p in pool._executor._processes.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        # the three start in parallel: three tasks that each take 1 s end together, ~1 s after submission
        t0 = time.monotonic()
        for f in [pool.submit(time.sleep, 1) for _ in range(3)]:
            f.result(timeout=60)
        assert time.monotonic() - t0 < 2.5
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


def _compile_under_lock(lock_dir: str, key: str, log: str, hold_s: float) -> None:
    from tuner.search.compile_pool import compile_lock

    with compile_lock(Path(lock_dir), "fused_moe/sglang/shape", key):
        with open(log, "a") as f:
            f.write(f"start {key} {time.monotonic()}\n")
        time.sleep(hold_s)
        with open(log, "a") as f:
            f.write(f"end {key} {time.monotonic()}\n")


def _intervals(log: Path) -> list[tuple[str, float, float]]:
    starts: dict[int, tuple[str, float]] = {}
    out = []
    for i, line in enumerate(log.read_text().splitlines()):
        kind, key, t = line.split()
        if kind == "start":
            starts[i] = (key, float(t))
        else:
            k = next(j for j, (kk, _) in starts.items() if kk == key)
            out.append((key, starts.pop(k)[1], float(t)))
    return out


def test_two_gpu_workers_of_one_host_never_compile_the_same_config_at_once(tmp_path):
    """Two processes (as the compile pools of two GPU workers sharing one Triton cache) asked for the same config:
    the second waits for the first; a different config is compiled meanwhile."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    log = tmp_path / "log"
    procs = [ctx.Process(target=_compile_under_lock, args=(str(tmp_path / "locks"), key, str(log), 2.0))
             for key in ("M64_N128", "M64_N128", "M16_N32")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    spans = _intervals(log)
    same = sorted((s, e) for k, s, e in spans if k == "M64_N128")
    other = next((s, e) for k, s, e in spans if k == "M16_N32")
    assert len(same) == 2 and same[1][0] >= same[0][1]  # serialised
    assert other[0] < max(e for _, e in same) and other[1] > min(s for s, _ in same)  # overlapped with them


def test_an_unusable_lock_folder_does_not_stop_compiling(tmp_path):
    from tuner.search.compile_pool import compile_lock

    blocker = tmp_path / "file"
    blocker.write_text("")
    with compile_lock(blocker / "locks", "ns", "key"):  # a file where the folder should be
        pass


def test_a_compile_process_builds_one_probe_per_sweep_and_drops_the_last_sweeps(monkeypatch):
    """A pool started before its job serves sweep after sweep (13 GEMM shapes): each compile process builds the
    probe of the sweep it is asked for once, and frees the previous sweep's placeholder tensors first."""
    import tuner.kernels.family as family_module
    from tuner.search import compile_pool

    built: list[tuple[dict, str]] = []

    class Family:
        def compile_probe(self, shape_json, backend_name):
            built.append((shape_json, backend_name))
            return object()

    monkeypatch.setattr(family_module, "get_family", lambda name: Family())
    monkeypatch.setattr(compile_pool, "_worker_state", {})
    a = ("fp8_gemm", '{"k": 7168, "n": 576}', "sglang")
    b = ("fp8_gemm", '{"k": 2048, "n": 7168}', "sglang")
    first = compile_pool._probe_for(a)
    assert compile_pool._probe_for(a) is first  # built once per sweep
    second = compile_pool._probe_for(b)
    assert second is not first and compile_pool._worker_state["probe"] is second
    assert built == [({"k": 7168, "n": 576}, "sglang"), ({"k": 2048, "n": 7168}, "sglang")]
