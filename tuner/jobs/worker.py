"""The worker loop: claim a work unit, keep its lease alive while it runs, record the outcome, repeat.

Any number of workers on any number of hosts share one database. A worker that dies leaves its unit to be taken
over when the lease ends (nothing it measured is lost: measurements are stored as they arrive); Ctrl-C gives the
unit back at once. What a unit *does* is its job kind's handler (`tuner.jobs.kinds.handler_for(context)`): for
kernel sweeps, a `SweepSession` on this worker's GPU, kept across the units of one job.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from tuner.errors import LeaseLostError
from tuner.jobs import kinds, units
from tuner.jobs.context import UnitHandler, WorkerContext
from tuner.store.db import Database, open_database

log = logging.getLogger(__name__)

DEFAULT_LEASE_S = 120.0  # a unit is taken over this long after its worker's last heartbeat
DEFAULT_HEARTBEAT_S = 20.0
DEFAULT_POLL_S = 2.0


@dataclass
class WorkerSummary:
    worker_id: str
    done: list[str] = field(default_factory=list)  # "job#id/unit key"
    failed: list[str] = field(default_factory=list)


class _Heartbeat:
    """Renews a unit's lease every `every_s` seconds in a background thread until stopped; records a lost lease."""

    def __init__(self, db: Database, unit_id: int, worker_id: str, lease_s: float, every_s: float) -> None:
        self.lost: str | None = None
        self._stop = threading.Event()
        self._args = (db, unit_id, worker_id, lease_s)
        self._every_s = every_s
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{unit_id}", daemon=True)

    def _loop(self) -> None:
        db, unit_id, worker_id, lease_s = self._args
        while not self._stop.wait(self._every_s):
            try:
                units.heartbeat(db, unit_id, worker_id, lease_s=lease_s)
            except LeaseLostError as exc:
                self.lost = str(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a database hiccup: try again at the next beat
                log.warning("heartbeat for unit %s failed: %s", unit_id, exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def work(
    database_url: str,
    handler_for: Callable[[units.JobRecord], UnitHandler],
    *,
    kinds: list[str] | None = None,
    job_ids: list[int] | None = None,
    worker_id: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    poll_s: float = DEFAULT_POLL_S,
    stay: bool = False,
    print_fn: Callable[[str], None] | None = None,
    raise_errors: bool = False,
) -> WorkerSummary:
    """Claim and run units of `kinds` (and of `job_ids`, if given) until none is left.

    Units other workers hold are waited for (if such a worker died, its lease ends and the unit comes back); with
    `stay`, the worker polls for new work forever (a service's worker). Ctrl-C releases the unit in hand and
    re-raises. A unit whose handler raises is failed with the error; the loop goes on (with `raise_errors`, as
    a command running its own job in-process wants, the error is raised once the unit is recorded failed).
    """
    worker_id = worker_id or units.new_worker_id()
    summary = WorkerSummary(worker_id)
    db = open_database(database_url)
    handlers: dict[int, UnitHandler] = {}
    say = print_fn or (lambda _line: None)
    try:
        while True:
            claim = units.claim_unit(db, worker_id, kinds=kinds, lease_s=lease_s, job_ids=job_ids)
            if claim is None:
                if _held_by_others(db, kinds, job_ids):
                    time.sleep(poll_s)  # units others hold may come back: keep this job's state
                    continue
                if stay:
                    _close_handlers(handlers)  # idle: a waiting worker holds no GPU state (sessions, compile pools)
                    time.sleep(poll_s)
                    continue
                return summary
            unit, job = claim.unit, claim.job
            label = f"job#{job.id}/{unit.key}"
            try:
                if job.id not in handlers:
                    # one job's state at a time: a long-running worker must not keep every finished job's sweep
                    # sessions (weights on the GPU, a compile pool each) open
                    _close_handlers(handlers)
                    handlers[job.id] = handler_for(job)
                with _Heartbeat(db, unit.id, worker_id, lease_s, heartbeat_s) as beat:
                    result = handlers[job.id].run(unit)
                if beat.lost:
                    say(f"{label}: lease lost while running ({beat.lost}); its result is not recorded")
                    continue
                units.complete(db, unit.id, worker_id, result)
                summary.done.append(label)
            except KeyboardInterrupt:
                _give_back(db, unit.id, worker_id)
                raise
            except LeaseLostError as exc:
                say(f"{label}: {exc}")
            except Exception as exc:  # a failed unit is recorded; the worker goes on
                log.exception("%s failed", label)
                _fail(db, unit.id, worker_id, f"{type(exc).__name__}: {exc}")
                summary.failed.append(label)
                if raise_errors:
                    raise
                say(f"{label} failed: {type(exc).__name__}: {exc}")
    finally:
        _close_handlers(handlers)
        db.dispose()


def _close_handlers(handlers: dict[int, UnitHandler]) -> None:
    while handlers:
        job_id, handler = handlers.popitem()
        try:
            handler.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort; the next handler must still open
            log.warning("closing the handler of job #%s failed: %s", job_id, exc)


def _held_by_others(db: Database, kinds: list[str] | None, job_ids: list[int] | None) -> bool:
    """Whether other workers hold units this worker could take over if their leases ended."""
    for p in units.list_progress(db, states=("queued", "running")):
        if (kinds is None or p.job.kind in kinds) and (job_ids is None or p.job.id in job_ids) and p.claimed:
            return True
    return False


def _give_back(db: Database, unit_id: int, worker_id: str) -> None:
    try:
        units.release(db, unit_id, worker_id)
    except Exception as exc:  # noqa: BLE001 - its lease will end anyway
        log.warning("could not release unit %s: %s", unit_id, exc)


def _fail(db: Database, unit_id: int, worker_id: str, error: str) -> None:
    try:
        units.fail(db, unit_id, worker_id, error)
    except LeaseLostError as exc:
        log.warning("unit %s: %s", unit_id, exc)


# ------------------------------------------------------------------------------------------ workers of this host


def gpu_work(database_url: str, device_index: int, *, job_ids: list[int] | None = None,
             compile_workers: int | None = None, stay: bool = False,
             print_fn: Callable[[str], None] | None = None, compile_pool: Any = None) -> WorkerSummary:
    """A worker on GPU `device_index`: takes the units of every job kind that runs on this GPU (kernel sweeps for
    this GPU's device name, flag searches of real engines), dispatched through tuner.jobs.kinds. `compile_pool`: a
    CompilePool on this GPU, started early, that every kernel sweep of this worker uses (the caller closes it)."""
    from tuner.kernels.timing import require_cuda

    require_cuda()
    context = WorkerContext(database_url, device_index, compile_workers, print_fn, compile_pool=compile_pool)
    worker_id = f"{units.new_worker_id()}/gpu{device_index}"
    return work(database_url, kinds.handler_for(context), kinds=kinds.claimed_kinds(context), job_ids=job_ids,
                worker_id=worker_id, stay=stay, print_fn=print_fn)


def cpu_work(database_url: str, *, job_ids: list[int] | None = None, stay: bool = False,
             print_fn: Callable[[str], None] | None = None) -> WorkerSummary:
    """A worker without a GPU: takes the units of job kinds that need none (exports, flag searches of the
    simulated engine)."""
    context = WorkerContext(database_url, None, None, print_fn)
    worker_id = f"{units.new_worker_id()}/cpu"
    return work(database_url, kinds.handler_for(context), kinds=kinds.claimed_kinds(context), job_ids=job_ids,
                worker_id=worker_id, stay=stay, print_fn=print_fn)


def _warm_up(device_index: int, kernels: list[tuple[str, str | None]]) -> dict[str, float]:
    """What every GPU worker does before its first unit and needs no job for (the compile processes' start, plus the
    job kinds' modules). Returns the seconds each phase took. Failures are left to the real start to report."""
    from tuner.search.compile_pool import warm_gpu_process

    try:
        took = warm_gpu_process(device_index, kernels)
        import tuner.jobs.kinds  # noqa: F401 - the handlers' modules
    except Exception as exc:  # noqa: BLE001
        log.debug("warm-up of GPU %s: %s", device_index, exc)
        return {}
    return took


def _run_gpu_worker(database_url: str, device_index: int, job_ids: list[int], compile_workers: int | None,
                    compile_pool: Any = None) -> None:
    gpu_work(database_url, device_index, job_ids=job_ids, compile_workers=compile_workers, print_fn=print,
             compile_pool=compile_pool)


def _gpu_process(conn: Any, database_url: str, device_index: int, compile_workers: int | None,
                 kernels: list[tuple[str, str | None]], run: Callable[..., None], log_level: int) -> None:
    import signal

    # terminate() (the parent stopping its workers) is handled like Ctrl-C: the unit in hand is given back and the
    # compile pool stopped, instead of both being left to their lease and to chance
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    pool = None
    try:
        t0 = time.perf_counter()
        if kernels:  # a kernel sweep: its compile processes start now, beside this worker's own start-up
            from tuner.search.compile_pool import CompilePool

            pool = CompilePool(device_index, compile_workers, warm=kernels)
        phases = {"compile pool": time.perf_counter() - t0, **_warm_up(device_index, kernels)}
        ready_s = time.perf_counter() - t0
        try:
            job_ids = conn.recv()
        except EOFError:  # the parent went away before the job existed
            return
        log.info("GPU %s worker: ready %.1f s after its start (%s), given its job %.1f s later (%s UTC)",
                 device_index, ready_s, ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()),
                 time.perf_counter() - t0 - ready_s, time.strftime("%H:%M:%S", time.gmtime()))
        if job_ids is None:  # nothing to do (the request was refused)
            return
        run(database_url, device_index, job_ids, compile_workers, pool)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole group; the parent reports it, the unit was given back
        raise SystemExit(130) from None
    finally:
        if pool is not None:
            pool.close()


class GpuWorkers:
    """One worker process per GPU, started *before* their job exists so that their start-up (interpreter, torch,
    CUDA context, the engine kernels' imports) overlaps the planning of the job; `start(job_ids)` hands them the
    job, `join()` waits for the work to end. Used as a context manager: leaving it (an error, Ctrl-C, a refused
    request) stops every worker still running, so none outlives the command.

    `kernels`: (family, kernel_source) pairs whose modules the workers import while they wait; given any, each
    worker also starts its compile pool (tuner.search.compile_pool.CompilePool) at once and its sweeps use it.
    `run(database_url, gpu, job_ids, compile_workers, compile_pool)` is what a worker does once given its jobs
    (default: `gpu_work`; a module-level function, as the processes are spawned; the pool is None without
    `kernels`)."""

    def __init__(self, database_url: str, gpus: list[int], *, compile_workers: int | None = None,
                 kernels: list[tuple[str, str | None]] | None = None,
                 run: Callable[..., None] = _run_gpu_worker) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.gpus = gpus
        self._conns = []
        self._procs = []
        for gpu in gpus:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_gpu_process, args=(child, database_url, gpu, compile_workers, kernels or [], run,
                                                           logging.getLogger().getEffectiveLevel()),
                               name=f"tuner-gpu{gpu}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._started = False

    def start(self, job_ids: list[int]) -> None:
        """Give every worker the jobs whose units it claims."""
        for conn in self._conns:
            conn.send(list(job_ids))
        self._started = True

    def join(self) -> list[int]:
        """Wait until every worker has ended; the GPUs whose worker failed."""
        for p in self._procs:
            p.join()
        return [gpu for gpu, p in zip(self.gpus, self._procs) if p.exitcode != 0]

    def close(self) -> None:
        """Stop what still runs: workers not yet given a job are told there is none; the others are terminated
        (each gives its unit back or lets its lease end), then killed if they do not stop."""
        for conn in self._conns:
            if not self._started:
                with contextlib.suppress(OSError):
                    conn.send(None)
            conn.close()
        for p in self._procs:
            if p.is_alive() and self._started:
                p.terminate()
        for p in self._procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def per_gpu_compile_workers(gpus: list[int], compile_workers: int | None = None) -> int:
    """Compile processes per GPU worker: `compile_workers`, else the host's cores shared out (one left per GPU for
    its worker)."""
    import os

    return compile_workers or max(1, ((os.cpu_count() or 2) - len(gpus)) // len(gpus))
